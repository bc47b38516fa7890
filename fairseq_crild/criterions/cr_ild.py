"""``cr_ild``: stage-1 intermediate layer distillation (ILD), with CR-ILD and its baselines.

One criterion covers the ILD family the CR-ILD paper compares: hidden-state MSE (through a learned
projection when widths differ), attention-score KL, MiniLM-style Q/K/V self-relation KL and
PKD's normalised [CLS] MSE, over a last / uniform / explicit layer map; CR-ILD adds mixup of
the embedding output (fed identically to teacher and student) and a consistency term between
the student's features of the mixed input and the mix of its clean features. Presets
(``--ild-preset``) fill in whatever option is left unset. Labels are never used.

The criterion composes one unit per job: ``ild_presets`` (options and presets),
``ild_layers`` (the layer map), ``ild_features`` (the request and the features),
``ild_distance`` (each object's distance), ``ild_targets`` (fit_dense, the EMA copy),
``ild_freezing`` (parameters no loss reaches), ``consistency`` (mixup draws, the ramped
consistency term), ``ild_emd`` (BERT-EMD's cost matrices) and ``ild_precision`` (fp16/bf16).
"""


import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II
from torch import Tensor, nn

from fairseq_crild.criterions import consistency, ild_emd, ild_targets
from fairseq_crild.criterions.contract import DistillTaskState, PadsEveryBatch, require
from fairseq_crild.criterions.ild_distance import IldDistance, RelationMemo
from fairseq_crild.criterions.ild_features import (
    feature_request,
    flatten_features,
    object_of,
    select_features,
)
from fairseq_crild.criterions.ild_freezing import freeze_unreached
from fairseq_crild.criterions.ild_layers import (
    LayerPlan,
    check_attention_heads,
    relation_heads,
    resolve_layer_plan,
)
from fairseq_crild.criterions.ild_precision import KeepsFp32Children, follow_student
from fairseq_crild.criterions.ild_presets import PRESETS, IldOptions, resolve_options
from fairseq_crild.distill import relation_kernel
from fairseq_crild.distill.emd import EmdLayerWeights
from fairseq_crild.models.requests import FeatureRequest, MixupSpec

logger = logging.getLogger(__name__)


@dataclass
class CrIldConfig(FairseqDataclass):
    ild_preset: ChoiceEnum(list(PRESETS)) = field(  # type: ignore[valid-type]
        default="cr_ild", metadata={"help": "method preset (default cr_ild): cr_ild (the "
                                    "paper's CR-ILD: Q/K/V relations of the last layer on "
                                    "mixup inputs + consistency on those relations, weight "
                                    "0.1 ramped over epochs), cr_ild_release (the authors' "
                                    "released script: the same objects and mixup, consistency "
                                    "inert, padding included with every batch padded to "
                                    "--max-positions), l_ild / minilm (relations without "
                                    "mixup), tinybert (attention + hidden, uniform map with "
                                    "the embedding pair, fit_dense always), pkd (normalised "
                                    "[CLS], uniform map, fit_dense always), emd (attention + "
                                    "hidden, EMD many-to-many map, fit_dense always); options "
                                    "below override it"}
    )
    ild_objects: str = field(
        default="", metadata={"help": "comma list of hidden, attention, qkv, cls "
                              "(empty: the preset's)"}
    )
    ild_layer_map: str = field(
        default="", metadata={"help": "last | uniform | emd (BERT-EMD: every student layer "
                              "to every teacher layer, weighted by the EMD flow) | explicit "
                              "'s:t,...' pairs of 0-based student:teacher layers (empty: the "
                              "preset's)"}
    )
    emd_variant: ChoiceEnum(["release", "bert_emd"]) = field(  # type: ignore[valid-type]
        default="release", metadata={"help": "--ild-layer-map emd weight update (default "
                                     "release): release = the CR-ILD authors' EMD baseline "
                                     "(w_i proportional to 1 / unit transport cost, no "
                                     "softmax, separate attention and hidden weights, reset "
                                     "to uniform every epoch); bert_emd = the BERT-EMD paper's "
                                     "softmax(w / T) update, weights shared by all objects "
                                     "and kept across epochs"}
    )
    emd_attention_cost: ChoiceEnum(["variant", "mse", "kl"]) = field(  # type: ignore[valid-type]
        default="variant", metadata={"help": "--ild-layer-map emd attention cost between two "
                                     "layers: mse of the pre-softmax scores (BERT-EMD's, the "
                                     "release's), kl (our attention distance, "
                                     "--attention-loss), or variant (default: mse for "
                                     "release, kl for bert_emd)"}
    )
    emd_temperature: float = field(
        default=1.0, metadata={"help": "--emd-variant bert_emd: cost-attention temperature T "
                               "of the layer-weight update softmax (default 1)"}
    )
    emd_embedding_loss: ChoiceEnum(["on", "off"]) = field(  # type: ignore[valid-type]
        default="on", metadata={"help": "with --ild-layer-map emd and hidden states: add the "
                                "MSE between embedding outputs, as BERT-EMD does (default on)"}
    )
    emd_extra_softmax: ChoiceEnum(["on", "off"]) = field(  # type: ignore[valid-type]
        default="off", metadata={"help": "--emd-variant bert_emd: apply a second softmax (no "
                                 "temperature) to the updated layer weights, as the BERT-EMD "
                                 "code does (on), or stop at the paper's softmax(w / T) (off, "
                                 "default): on pins the weights near e:1:...:1 whatever the "
                                 "costs (fairseq_crild/distill/emd.py)"}
    )
    num_relation_heads: int = field(
        default=0, metadata={"help": "relation heads R for the Q/K/V relation loss (0: the "
                             "teacher's attention heads; both widths must be divisible by R)"}
    )
    relation_kl_impl: ChoiceEnum(["torch", "cpp"]) = field(  # type: ignore[valid-type]
        default="torch", metadata={"help": "how the masked Q/K/V relation KL is computed: "
                                   "torch (default: eager ops) or cpp (each side's masked "
                                   "log-softmax and each KL term in one C++ pass on the CPU, "
                                   "built at first use; needs a C++ compiler and ninja; "
                                   "equal to torch up to float32 rounding, not bit for bit; "
                                   "CUDA tensors keep the torch path)"}
    )
    ild_padding: ChoiceEnum(["preset", "exclude", "include"]) = field(  # type: ignore[valid-type]
        default="preset", metadata={"help": "padding in the hidden MSE, attention CE and "
                                    "Q/K/V relation losses: exclude (ours: padded positions "
                                    "do not count; dynamic batches) or include (the authors': "
                                    "every batch padded to --max-positions through the task, "
                                    "hidden MSE and attention CE averaged over all B x L "
                                    "positions, relations over the full L x L grid); preset "
                                    "(default): include for cr_ild_release, exclude otherwise"}
    )
    relation_padding: ChoiceEnum(["ild", "exclude", "include"]) = field(  # type: ignore[valid-type]
        default="ild", metadata={"help": "padding of the Q/K/V relation loss alone: ild "
                                 "(default: as --ild-padding), exclude, or include (padded "
                                 "rows/keys count, as the authors' code; implies padding "
                                 "every batch to --max-positions, their 128 x 128 grid)"}
    )
    hidden_projection: ChoiceEnum(["preset", "always", "when-widths-differ"]) = field(  # type: ignore[valid-type]
        default="preset", metadata={"help": "learned Linear(student width -> teacher width) "
                                    "applied to every student hidden state entering a hidden "
                                    "MSE, PKD [CLS] or EMD hidden term (teacher states are "
                                    "not projected; saved with the criterion): always (the "
                                    "authors' fit_dense, also at equal widths) or "
                                    "when-widths-differ; preset (default): always for "
                                    "tinybert, pkd, emd, when-widths-differ otherwise"}
    )
    uniform_embedding_pair: ChoiceEnum(["on", "off"]) = field(  # type: ignore[valid-type]
        default="on", metadata={"help": "--ild-layer-map uniform with hidden states: also "
                                "match the embedding outputs, student h_0 <- teacher h_0, as "
                                "TinyBERT does (on, default) or only the layer outputs (off)"}
    )
    attention_loss: ChoiceEnum(["kl", "ce"]) = field(  # type: ignore[valid-type]
        default="kl", metadata={"help": "attention loss: KL (0 at equality) or the literal "
                                "cross-entropy (same gradient)"}
    )
    mixup: ChoiceEnum(["preset", "on", "off"]) = field(  # type: ignore[valid-type]
        default="preset", metadata={"help": "embedding mixup during training"}
    )
    mixup_alpha: float = field(default=1.0, metadata={"help": "lam ~ Beta(a, a), max(lam, 1-lam)"})
    mixup_partner: ChoiceEnum(["reverse", "random"]) = field(  # type: ignore[valid-type]
        default="reverse", metadata={"help": "partner of example i: B-1-i (authors) or a "
                                     "random permutation"}
    )
    consistency_weight: float = field(
        default=-1.0, metadata={"help": "w_ic of the consistency term, ramped up linearly "
                                "over epochs counted from 0 (negative, default: the preset's, "
                                "0.1 for cr_ild, 0 otherwise; needs mixup)"}
    )
    consistency_objects: str = field(
        default="", metadata={"help": "comma list of the ILD objects (hidden, attention, "
                              "qkv) the consistency term acts on; empty (default): the "
                              "preset's: every ILD object for cr_ild, the attention/hidden "
                              "ones otherwise (the authors' code: inert on Q/K/V)"}
    )
    consistency_on_relations: bool = field(
        default=False, metadata={"help": "add qkv to the consistency objects (cr_ild already "
                                 "has it; cr_ild_release, as the authors' code, has not)"}
    )
    consistency_target: ChoiceEnum(["clean", "ema"]) = field(  # type: ignore[valid-type]
        default="clean", metadata={"help": "clean features from the student itself (default) "
                                   "or from an EMA copy of it, updated after every optimizer "
                                   "step and run in eval mode (fp32, saved in checkpoints)"}
    )
    ema_decay: float = field(default=0.999, metadata={"help": "decay of the EMA student"})
    max_epoch: int = II("optimization.max_epoch")
    max_update: int = II("optimization.max_update")


@register_criterion("cr_ild", dataclass=CrIldConfig)
class CrIldCriterion(KeepsFp32Children, FairseqCriterion):
    #: fairseq halves / casts the criterion under --fp16 / --bf16; the EMA stays fp32 (a
    #: 0.1% step is below half precision's resolution: a half EMA would never move)
    fp32_children = ("ema_model",)
    #: share the Q/K/V relation log-probabilities between the ILD and consistency terms of a
    #: forward (:class:`~fairseq_crild.criterions.ild_distance.RelationMemo`: same values,
    #: gradients equal up to rounding); False recomputes them per term, as before (kept for
    #: the benchmark's A/B and the numerics tests)
    share_relations: bool = True
    #: the encoders stop at the last requested feature (``FeatureRequest.stop_early``: for
    #: the last layer's Q/K/V, the rest of that layer is skipped; same features, same random
    #: stream); False runs every layer, as before (kept for the benchmark's A/B)
    stop_early: bool = True

    def __init__(self, cfg: CrIldConfig, task):
        require(task, DistillTaskState, "cr_ild")
        super().__init__(task)
        self.task: DistillTaskState = task
        self.cfg = cfg
        self.options: IldOptions = resolve_options(cfg)
        if self.options.counts_padding:
            self._pad_every_batch()
        # set by prepare_student, once the models are known
        self.layers = LayerPlan()
        self.distance: Optional[IldDistance] = None
        # the criterion's modules and buffer: their names are the checkpoint format
        self.emd: Optional[EmdLayerWeights] = None
        self.projection: Optional[nn.Linear] = None
        self.ema_model: Optional[nn.Module] = None
        self.register_buffer("ema_updates", ild_targets.ema_counter())
        self._micro_batches = consistency.MicroBatchCounter()

    @property
    def use_mixup(self) -> bool:
        """Whether training mixes examples (``MixesExamples``: the task reads it)."""
        return self.options.use_mixup

    def _pad_every_batch(self) -> None:
        """Padded positions count only as the authors count them if every batch is padded
        to the same fixed length (their 128 x 128 grid): ask the task to pad."""
        why = (f"--ild-padding {self.options.pad_mode} / --relation-padding "
               f"{self.options.relation_pad_mode} (preset {self.cfg.ild_preset})")
        if not isinstance(self.task, PadsEveryBatch):
            raise ValueError(f"{why} counts padded positions, which matches the authors only "
                             "when every batch is padded to --max-positions, and task "
                             f"{type(self.task).__name__} cannot pad every batch (no "
                             "pad_every_batch_to); use --task distill_glue, or "
                             "--ild-padding exclude --relation-padding exclude")
        length = int(self.task.cfg.max_positions)
        self.task.pad_every_batch_to(length)
        logger.info(f"{why}: every batch padded to --max-positions {length}")

    # ------------------------------------------------------------------ set-up
    def prepare_student(self, student) -> None:
        """Resolves the layer map, builds the projection / EMA copy, freezes the student
        parameters no ILD loss reaches (DDP would otherwise fail on unused parameters)."""
        teacher, opts = self.task.teacher, self.options
        objects = opts.objects
        self.layers = resolve_layer_plan(opts.layer_map_spec, objects, student.num_layers,
                                         teacher.num_layers,
                                         self.cfg.uniform_embedding_pair == "on")
        if self.layers.every_pair:
            self.emd = ild_emd.build_layer_weights(
                student.num_layers, teacher.num_layers, objects,
                variant=str(self.cfg.emd_variant), temperature=self.cfg.emd_temperature,
                extra_softmax=self.cfg.emd_extra_softmax == "on")
        t_heads = teacher.model.cfg.encoder_attention_heads
        check_attention_heads(objects, student.cfg.encoder_attention_heads, t_heads)
        heads = relation_heads(objects, self.cfg.num_relation_heads, t_heads,
                               student.hidden_size, teacher.hidden_size)
        self.distance = IldDistance(
            pad_mode=opts.pad_mode, relation_pad_mode=opts.relation_pad_mode,
            attention_kl=self.cfg.attention_loss == "kl", relation_heads=heads,
            cls_layers=1 if self.emd is not None else max(len(self.layers.student_layers), 1),
            relation_impl=str(self.cfg.relation_kl_impl))
        if self.distance.relation_impl == "cpp" and "qkv" in objects:
            relation_kernel.kernel()  # a missing compiler fails here, naming the option
        self.projection = ild_targets.build_projection(objects, opts.projection_mode,
                                                       student.hidden_size, teacher.hidden_size)
        freeze_unreached(student, self.task.dictionary.bos(), self._student_request(None),
                         lambda extra: flatten_features(self._student_features(extra)))
        if opts.consistency_acts and self.cfg.consistency_target == "ema":
            self.ema_model = ild_targets.build_ema(student)
        logger.info(f"ILD objects {objects}, layer map {self.layers.layer_map}, hidden-state "
                    f"pairs {self.layers.hidden_pairs}, mixup {opts.use_mixup}, consistency "
                    f"weight {opts.consistency_weight} on "
                    f"{opts.consistency_objects or 'nothing'}, padding {opts.pad_mode} "
                    f"(relations {opts.relation_pad_mode})")

    # ------------------------------------------------------------------ features
    def _student_request(self, mixup: Optional[MixupSpec]) -> FeatureRequest:
        return feature_request(self.options.objects, self.layers.student_layers, mixup,
                               self.stop_early)

    def _student_features(self, extra: Dict[str, Any]) -> Dict[str, Any]:
        return select_features(extra, self.options.objects, self.layers.student_layers,
                               self.layers.embedding_pair)

    def _emd_terms(self, s_extra: Dict[str, Any], t_extra: Dict[str, Any],
                   s_feats: Dict[str, Any], t_feats: Dict[str, Any], mask: Tensor,
                   update: bool) -> Dict[str, Tensor]:
        """BERT-EMD (fairseq_crild/distill/emd.py, --emd-variant): per object, the M x N matrix of
        per-layer costs between every student and teacher layer, weighted by the EMD flow;
        during training the layer weights are reset at each new epoch (release variant) and
        updated from the flow after it; plus the embedding-output MSE."""
        if update:  # the task's begin_epoch sets current_epoch; the weights see it change
            self.emd.begin_epoch(int(self.task.current_epoch))
        costs = ild_emd.cost_matrices(
            self.options.objects, s_feats, t_feats, len(self.layers.student_layers),
            len(self.layers.teacher_layers), mask, self.distance, self.projection,
            ild_emd.attention_cost(str(self.cfg.emd_attention_cost), self.cfg.emd_variant))
        terms = self.emd(costs, update=update)
        if "hidden" in self.options.objects and self.cfg.emd_embedding_loss == "on":
            terms["embedding"] = self.distance("hidden", s_extra["hidden_states"][0],
                                               t_extra["hidden_states"][0], mask,
                                               self.projection)
        return terms

    # ------------------------------------------------------------------ forward
    def forward(self, model, sample, reduce: bool = True):
        net_input = sample["net_input"]
        batch = net_input["src_tokens"].size(0)
        mixup = None
        micro_batch = self._micro_batches.next(self.task.num_updates) if model.training else 0
        if model.training and self.ema_model is not None:
            # after every optimizer step, from the first one
            ild_targets.update_ema(self.ema_model, self.ema_updates, model,
                                   self.task.num_updates, self.cfg.ema_decay)
        if model.training and self.options.use_mixup and batch > 1:
            mixup = consistency.draw_mixup(
                self.task.cfg.seed, self.task.num_updates, micro_batch, batch,
                self.cfg.mixup_alpha, str(self.cfg.mixup_partner), net_input["src_tokens"].device)
        _, s_extra = model(**net_input, request=self._student_request(mixup))
        teacher = self.task.teacher
        follow_student(teacher, model)
        t_layers = self.layers.teacher_layers
        _, t_extra = teacher(net_input, None,
                             feature_request(self.options.objects, t_layers, mixup,
                                             self.stop_early))
        mask = ~s_extra["padding_mask"]
        s_feats = self._student_features(s_extra)
        t_feats = select_features(t_extra, self.options.objects, t_layers,
                                  self.layers.embedding_pair)

        terms: Dict[str, Tensor] = {}
        memo = self.distance.relation_memo() if self.share_relations else None
        if self.emd is not None:
            terms = self._emd_terms(s_extra, t_extra, s_feats, t_feats, mask, model.training)
        else:
            for key, value in s_feats.items():
                obj = object_of(key)
                d = self.distance(obj, value, t_feats[key], mask, self.projection, memo)
                terms[obj] = terms.get(obj, 0.0) + d
        ild = sum(terms.values())
        loss = ild
        log: Dict[str, Any] = {f"loss_{k}": v.detach() * batch for k, v in terms.items()}
        if self.emd is not None:  # the layer weights after this step's update
            log.update(self.emd.log_values(batch))

        weight = consistency.consistency_weight_now(
            self.options.consistency_weight, self.cfg.max_epoch, self.cfg.max_update,
            self.task.current_epoch, self.task.num_updates)
        acts = self.options.consistency_acts
        if mixup is not None and weight > 0 and acts:
            cons = self._consistency(model, net_input, s_feats, mixup, mask, memo)
            loss = loss + weight * cons
            log["loss_cons"] = cons.detach() * batch
        if mixup is not None:
            log["lam"] = mixup.lam * batch
            if acts:  # the ramp, also while it is still 0 (epoch 0)
                log["w_cons"] = weight * batch
        logging_output = {
            "loss": loss.detach() * batch, "loss_ild": ild.detach() * batch,
            "ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch, **log,
        }
        return loss * batch, batch, logging_output

    def _consistency(self, model, net_input, s_feats, mixup: MixupSpec, mask: Tensor,
                     memo: Optional[RelationMemo] = None) -> Tensor:
        """The consistency term against the clean features of the student itself, or of its
        EMA copy (run in eval mode: the target has no dropout; criterion.train() undoes it)."""
        source = model if self.ema_model is None else self.ema_model
        if self.ema_model is not None:
            self.ema_model.eval()
        with torch.no_grad():
            _, c_extra = source(**net_input, request=self._student_request(None))
        clean = self._student_features(c_extra)
        if memo is None:
            return consistency.consistency_term(
                s_feats, clean, self.options.consistency_objects, mixup, mask,
                self.distance.on_single_tensors)
        return consistency.consistency_term(
            s_feats, clean, self.options.consistency_objects, mixup, mask,
            lambda obj: self.distance.on_single_tensors(obj, memo), memo.gather)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """A checkpoint saved before this criterion had parameters (e.g. a tinybert run
        before --hidden-projection always) holds None: keep the fresh ones, say so."""
        if state_dict is None:
            logger.warning("the checkpoint holds no cr_ild criterion state (saved without "
                           "a projection or EMA target): they start fresh")
            return None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        n = max(sum(log.get("sample_size", 0) for log in logging_outputs), 1)
        keys = sorted({k for log in logging_outputs for k in log
                       if k == "loss" or k.startswith(("loss_", "emd_")) or k in ("lam", "w_cons")})
        for key in keys:
            total = sum(float(log.get(key, 0)) for log in logging_outputs)
            metrics.log_scalar(key, total / n, n, round=4)
