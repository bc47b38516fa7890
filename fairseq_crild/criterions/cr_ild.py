"""``cr_ild``: stage-1 intermediate layer distillation (ILD), with CR-ILD and its baselines.

One criterion covers the ILD family the CR-ILD paper compares: hidden-state MSE (through a learned
projection when widths differ), attention-score KL, MiniLM-style Q/K/V self-relation KL and
PKD's normalised [CLS] MSE, over a last / uniform / explicit layer map; CR-ILD adds mixup of
the embedding output (fed identically to teacher and student) and a consistency term between
the student's features of the mixed input and the mix of its clean features. Presets
(``--ild-preset``) fill in whatever option is left unset. Labels are never used.
"""


import copy
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II
from torch import Tensor, nn

from fairseq_crild import losses
from fairseq_crild.criterions.contract import DistillTaskState, PadsEveryBatch, require
from fairseq_crild.distributed import batch_generator
from fairseq_crild.emd import (
    EmdLayerWeights,
    cost_matrix,
    pairwise_attention_kl,
    pairwise_attention_mse,
)
from fairseq_crild.models.requests import FeatureRequest, MixupSpec

logger = logging.getLogger(__name__)

OBJECTS = ("hidden", "attention", "qkv", "cls")
#: objects a consistency term can compare (PKD's [CLS] vectors are not among them)
CONSISTENCY_OBJECTS = ("hidden", "attention", "qkv")


@dataclass(frozen=True)
class Preset:
    """What ``--ild-preset`` fills in for every option left at "preset" / empty."""

    objects: str
    layer_map: str
    mixup: bool = False
    consistency_weight: float = 0.0
    #: "all": every ILD object (the paper's CR-ILD); "attention,hidden": only those among
    #: the ILD objects, as the authors' code applies its consistency flags
    consistency_objects: str = "attention,hidden"
    padding: str = "exclude"
    hidden_projection: str = "when-widths-differ"


PRESETS: Dict[str, Preset] = {
    # the paper's method: last-layer Q/K/V relations on mixup inputs + consistency on them
    "cr_ild": Preset("qkv", "last", mixup=True, consistency_weight=0.1,
                     consistency_objects="all"),
    # the authors' released script: same objects and mixup; their consistency flags act on
    # attention/hidden objects only (inert on Q/K/V); relations over the padded 128 x 128 grid
    "cr_ild_release": Preset("qkv", "last", mixup=True, padding="include"),
    "l_ild": Preset("qkv", "last"),
    "minilm": Preset("qkv", "last"),
    "tinybert": Preset("attention,hidden", "uniform", hidden_projection="always"),
    "pkd": Preset("cls", "uniform", hidden_projection="always"),
    "emd": Preset("attention,hidden", "emd", hidden_projection="always"),
    "custom": Preset("hidden", "last"),
}


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
                                 "costs (fairseq_crild/emd.py)"}
    )
    num_relation_heads: int = field(
        default=0, metadata={"help": "relation heads R for the Q/K/V relation loss (0: the "
                             "teacher's attention heads; both widths must be divisible by R)"}
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
class CrIldCriterion(FairseqCriterion):
    def __init__(self, cfg: CrIldConfig, task):
        require(task, DistillTaskState, "cr_ild")
        super().__init__(task)
        self.task: DistillTaskState = task
        self.cfg = cfg
        preset = PRESETS[str(cfg.ild_preset)]
        self.objects = _comma_list(cfg.ild_objects or preset.objects)
        bad = [o for o in self.objects if o not in OBJECTS]
        if bad or not self.objects:
            raise ValueError(f"--ild-objects {cfg.ild_objects!r}: unknown {bad}; choose from "
                             f"{', '.join(OBJECTS)}")
        self.layer_map_spec = cfg.ild_layer_map or preset.layer_map
        self.use_mixup = {"on": True, "off": False}.get(str(cfg.mixup), preset.mixup)
        self.consistency_weight = (preset.consistency_weight if cfg.consistency_weight < 0
                                   else cfg.consistency_weight)
        if self.consistency_weight > 0 and not self.use_mixup:
            raise ValueError("--consistency-weight > 0 needs mixup (--mixup on)")
        self.consistency_objects = self._resolve_consistency_objects(preset)
        if self.consistency_weight > 0 and not self.consistency_objects:
            logger.warning(f"--consistency-weight {self.consistency_weight} acts on no object "
                           f"(ILD objects {self.objects}, consistency objects of preset "
                           f"{cfg.ild_preset}: {preset.consistency_objects}): the loss is that "
                           "of weight 0; name the objects with --consistency-objects")
        self.pad_mode = preset.padding if cfg.ild_padding == "preset" else str(cfg.ild_padding)
        self.relation_pad_mode = (self.pad_mode if cfg.relation_padding == "ild"
                                  else str(cfg.relation_padding))
        if "include" in (self.pad_mode, self.relation_pad_mode):
            self._pad_every_batch()
        self.projection_mode = (preset.hidden_projection if cfg.hidden_projection == "preset"
                                else str(cfg.hidden_projection))
        # (student, teacher) indices into the hidden-state lists (0 = embedding output) of
        # the hidden-MSE pairs, set by prepare_student
        self.hidden_pairs: List[Tuple[int, int]] = []
        self.embedding_pair = False
        self.layer_map: List[Tuple[int, int]] = []
        # layers whose features are requested: pairwise aligned with layer_map, except for
        # BERT-EMD (emd), which compares every student layer with every teacher layer
        self.student_layers: List[int] = []
        self.teacher_layers: List[int] = []
        self.emd: Optional[EmdLayerWeights] = None
        self.relation_heads = cfg.num_relation_heads
        self.projection: Optional[nn.Linear] = None
        self.ema_model: Optional[nn.Module] = None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def _resolve_consistency_objects(self, preset: Preset) -> List[str]:
        """The objects the consistency term compares (empty: it is inert)."""
        if self.cfg.consistency_objects:
            chosen = _comma_list(self.cfg.consistency_objects)
            bad = [o for o in chosen if o not in CONSISTENCY_OBJECTS or o not in self.objects]
            if bad:
                raise ValueError(f"--consistency-objects {self.cfg.consistency_objects!r}: "
                                 f"{bad} not among the ILD objects {self.objects} that a "
                                 f"consistency term can compare ({', '.join(CONSISTENCY_OBJECTS)})")
        elif preset.consistency_objects == "all":
            chosen = [o for o in self.objects if o in CONSISTENCY_OBJECTS]
        else:
            chosen = [o for o in self.objects if o in _comma_list(preset.consistency_objects)]
        if self.cfg.consistency_on_relations and "qkv" in self.objects and "qkv" not in chosen:
            chosen.append("qkv")
        return chosen

    @property
    def consistency_acts(self) -> bool:
        """A consistency term is configured to act on at least one object."""
        return self.consistency_weight > 0 and bool(self.consistency_objects) and self.use_mixup

    def _pad_every_batch(self) -> None:
        """Padded positions count only as the authors count them if every batch is padded
        to the same fixed length (their 128 x 128 grid): ask the task to pad."""
        why = (f"--ild-padding {self.pad_mode} / --relation-padding {self.relation_pad_mode} "
               f"(preset {self.cfg.ild_preset})")
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
        teacher = self.task.teacher
        if self.layer_map_spec.strip().lower() == "emd":
            self.student_layers = list(range(student.num_layers))
            self.teacher_layers = list(range(teacher.num_layers))
            self.layer_map = [(s, t) for s in self.student_layers for t in self.teacher_layers]
            self.emd = EmdLayerWeights(student.num_layers, teacher.num_layers, self.objects,
                                       variant=str(self.cfg.emd_variant),
                                       temperature=self.cfg.emd_temperature,
                                       extra_softmax=self.cfg.emd_extra_softmax == "on")
        else:
            self.layer_map = losses.parse_layer_map(self.layer_map_spec, student.num_layers,
                                                    teacher.num_layers)
            self.student_layers = [s for s, _ in self.layer_map]
            self.teacher_layers = [t for _, t in self.layer_map]
            self.embedding_pair = ("hidden" in self.objects
                                   and self.layer_map_spec.strip().lower() == "uniform"
                                   and self.cfg.uniform_embedding_pair == "on")
        if "hidden" in self.objects:
            self.hidden_pairs = losses.hidden_state_pairs(
                [(s, t) for s, t in self.layer_map if self.emd is None], self.embedding_pair)
        if "attention" in self.objects:
            s_heads = student.cfg.encoder_attention_heads
            t_heads = teacher.model.cfg.encoder_attention_heads
            if s_heads != t_heads:
                raise ValueError(f"attention KL needs equal head counts (student {s_heads}, "
                                 f"teacher {t_heads}); use --ild-objects qkv instead")
        if "qkv" in self.objects:
            self.relation_heads = (self.cfg.num_relation_heads
                                   or teacher.model.cfg.encoder_attention_heads)
            for who, width in (("student", student.hidden_size), ("teacher", teacher.hidden_size)):
                if width % self.relation_heads:
                    raise ValueError(f"--num-relation-heads {self.relation_heads} does not divide "
                                     f"the {who} width {width}")
        if {"hidden", "cls"} & set(self.objects) and (
                self.projection_mode == "always" or student.hidden_size != teacher.hidden_size):
            self.projection = _fit_dense(student.hidden_size, teacher.hidden_size)
            logger.info(f"learned projection (fit_dense, --hidden-projection "
                        f"{self.projection_mode}) {student.hidden_size} -> "
                        f"{teacher.hidden_size}")
        self._freeze_unreached(student)
        if self.consistency_acts and self.cfg.consistency_target == "ema":
            self.ema_model = copy.deepcopy(student)
            for p in self.ema_model.parameters():
                p.requires_grad_(False)
        logger.info(f"ILD objects {self.objects}, layer map {self.layer_map}, hidden-state "
                    f"pairs {self.hidden_pairs}, mixup {self.use_mixup}, consistency weight "
                    f"{self.consistency_weight} on {self.consistency_objects or 'nothing'}, "
                    f"padding {self.pad_mode} (relations {self.relation_pad_mode})")

    def _student_request(self, mixup: Optional[MixupSpec]) -> FeatureRequest:
        return self._request(self.student_layers, mixup)

    def _request(self, layers: List[int], mixup: Optional[MixupSpec]) -> FeatureRequest:
        return FeatureRequest(
            hidden_states=bool({"hidden", "cls"} & set(self.objects)),
            attention_scores=frozenset(layers) if "attention" in self.objects else frozenset(),
            qkv=frozenset(layers) if "qkv" in self.objects else frozenset(),
            mixup=mixup,
        )

    def _freeze_unreached(self, student) -> None:
        """A tiny probe forward tells which parameters the requested features depend on."""
        probe = torch.full((2, 4), student.padding_idx + 1, dtype=torch.long)
        probe[:, 0] = self.task.dictionary.bos()
        device = next(student.parameters()).device
        _, extra = student(probe.to(device), request=self._student_request(None))
        feats = self._student_features(extra)
        total = sum(t.float().sum() for t in _flatten(feats))
        params = [p for p in student.parameters() if p.requires_grad]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        frozen = 0
        for p, g in zip(params, grads):
            if g is None:
                p.requires_grad_(False)
                frozen += p.numel()
        logger.info(f"froze {frozen} student parameters that no ILD loss reaches")

    # ------------------------------------------------------------------ features
    def _student_features(self, extra: Dict[str, Any]) -> Dict[str, Any]:
        return self._features(extra, self.student_layers)

    def _features(self, extra: Dict[str, Any], layers: List[int]) -> Dict[str, Any]:
        feats: Dict[str, Any] = {}
        if self.embedding_pair:  # TinyBERT's uniform map: embedding outputs, h_0 <- h_0
            feats["hidden.emb"] = extra["hidden_states"][0]
        for k, layer in enumerate(layers):
            if "hidden" in self.objects:
                feats[f"hidden.{k}"] = extra["hidden_states"][layer + 1]
            if "cls" in self.objects:
                feats[f"cls.{k}"] = extra["hidden_states"][layer + 1][:, 0]
            if "attention" in self.objects:
                feats[f"attention.{k}"] = extra["attention_scores"][layer]
            if "qkv" in self.objects:
                feats[f"qkv.{k}"] = extra["qkv"][layer]
        return feats

    def _distance(self, obj: str, student: Any, target: Any, mask: Tensor,
                  project: bool) -> Tensor:
        if obj in ("hidden", "cls") and project and self.projection is not None:
            student = self.projection(student)
        if obj == "hidden":
            return losses.hidden_mse(student, target, mask, self.pad_mode)
        if obj == "cls":
            # the authors' PKD term: mean over batch x mapped layers x hidden size; forward
            # sums the per-layer terms, so each is divided by the number of mapped layers
            # (EMD's cost matrix wants the per-pair value: its flow already sums to 1)
            n_layers = 1 if self.emd is not None else max(len(self.student_layers), 1)
            return losses.pkd_cls_loss(student, target, feature_mean=True, num_layers=n_layers)
        if obj == "attention":
            return losses.attention_kl(student, target, mask, kl=self.cfg.attention_loss == "kl",
                                       pad_mask_mode=self.pad_mode)
        return losses.qkv_relation_kl(student, target, mask, self.relation_heads,
                                      self.relation_pad_mode)

    def _emd_terms(self, s_extra: Dict[str, Any], t_extra: Dict[str, Any],
                   s_feats: Dict[str, Any], t_feats: Dict[str, Any], mask: Tensor,
                   update: bool) -> Dict[str, Tensor]:
        """BERT-EMD (fairseq_crild/emd.py, --emd-variant): per object, the M x N matrix of
        per-layer costs between every student and teacher layer, weighted by the EMD flow;
        during training the layer weights are reset at each new epoch (release variant) and
        updated from the flow after it; plus the embedding-output MSE."""
        if update:  # the task's begin_epoch sets current_epoch; the weights see it change
            self.emd.begin_epoch(int(self.task.current_epoch))
        n_s, n_t = len(self.student_layers), len(self.teacher_layers)
        attention_cost = str(self.cfg.emd_attention_cost)
        if attention_cost == "variant":
            attention_cost = "mse" if self.cfg.emd_variant == "release" else "kl"
        costs: Dict[str, Tensor] = {}
        for obj in self.objects:
            s_list = [s_feats[f"{obj}.{i}"] for i in range(n_s)]
            t_list = [t_feats[f"{obj}.{j}"] for j in range(n_t)]
            if obj == "attention" and attention_cost == "mse":
                # padding included (pad-to-128 batches): the mean over all B x H x L x L
                every = getattr(self, "pad_mode", "exclude") == "include"
                costs[obj] = pairwise_attention_mse(s_list, t_list, None if every else mask)
                continue
            if obj == "attention":  # each layer's softmax once, not once per pair
                costs[obj] = pairwise_attention_kl(s_list, t_list, mask,
                                                   kl=self.cfg.attention_loss == "kl")
                continue
            if obj in ("hidden", "cls") and self.projection is not None:  # once per layer
                s_list = [self.projection(x) for x in s_list]
            costs[obj] = cost_matrix(
                lambda i, j, obj=obj, s=s_list, t=t_list: self._distance(obj, s[i], t[j], mask,
                                                                         project=False),
                n_s, n_t)
        terms = self.emd(costs, update=update)
        if "hidden" in self.objects and self.cfg.emd_embedding_loss == "on":
            terms["embedding"] = self._distance("hidden", s_extra["hidden_states"][0],
                                                t_extra["hidden_states"][0], mask, project=True)
        return terms

    # ------------------------------------------------------------------ forward
    def forward(self, model, sample, reduce: bool = True):
        net_input = sample["net_input"]
        batch = net_input["src_tokens"].size(0)
        mixup = None
        micro_batch = self._next_micro_batch() if model.training else 0
        if model.training and self.ema_model is not None:
            self._maybe_update_ema(model)  # after every optimizer step, from the first one
        if model.training and self.use_mixup and batch > 1:
            # seeded by (--seed, update, the batch's place in the update's global batch): a
            # resumed run, and N ranks x --update-freq U, draw what one uninterrupted process
            # with --update-freq N*U draws (fairseq_crild/distributed.py)
            rng = batch_generator(self.task.cfg.seed, self.task.num_updates, micro_batch)
            lam = losses.sample_mixup_lambda(self.cfg.mixup_alpha, generator=rng)
            partner = losses.mixup_partner(batch, str(self.cfg.mixup_partner), generator=rng)
            mixup = MixupSpec(lam=lam, partner=partner.to(net_input["src_tokens"].device))
        _, s_extra = model(**net_input, request=self._student_request(mixup))
        student_param = next(model.parameters())
        teacher = self.task.teacher
        teacher.follow(student_param.device, student_param.dtype)
        t_layers = self.teacher_layers
        _, t_extra = teacher(net_input, None, self._request(t_layers, mixup))
        mask = ~s_extra["padding_mask"]
        s_feats = self._student_features(s_extra)
        t_feats = self._features(t_extra, t_layers)

        terms: Dict[str, Tensor] = {}
        if self.emd is not None:
            terms = self._emd_terms(s_extra, t_extra, s_feats, t_feats, mask, model.training)
        else:
            for key, value in s_feats.items():
                obj = key.split(".")[0]
                d = self._distance(obj, value, t_feats[key], mask, project=True)
                terms[obj] = terms.get(obj, 0.0) + d
        ild = sum(terms.values())
        loss = ild
        log: Dict[str, Any] = {f"loss_{k}": v.detach() * batch for k, v in terms.items()}
        if self.emd is not None:  # the layer weights after this step's update
            log.update(self.emd.log_values(batch))

        weight = self._consistency_weight_now()
        if mixup is not None and weight > 0 and self.consistency_acts:
            cons = self._consistency(model, net_input, s_feats, mixup, mask)
            loss = loss + weight * cons
            log["loss_cons"] = cons.detach() * batch
        if mixup is not None:
            log["lam"] = mixup.lam * batch
            if self.consistency_acts:  # the ramp, also while it is still 0 (epoch 0)
                log["w_cons"] = weight * batch
        logging_output = {
            "loss": loss.detach() * batch, "loss_ild": ild.detach() * batch,
            "ntokens": sample["ntokens"], "nsentences": batch, "sample_size": batch, **log,
        }
        return loss * batch, batch, logging_output

    def _next_micro_batch(self) -> int:
        """Index of this training forward among those of the current update (--update-freq)."""
        update = int(self.task.num_updates)
        last, index = getattr(self, "_micro_batch_at", (-1, -1))
        index = index + 1 if update == last else 0
        self._micro_batch_at = (update, index)
        return index

    def _consistency_weight_now(self) -> float:
        if self.consistency_weight <= 0:
            return 0.0
        if self.cfg.max_epoch and self.cfg.max_epoch > 0:
            epoch = self.task.current_epoch - 1  # epochs from 0, as the authors
            return losses.consistency_rampup(epoch, self.cfg.max_epoch, self.consistency_weight)
        if self.cfg.max_update and self.cfg.max_update > 0:
            done = self.task.num_updates
            return losses.consistency_rampup(done, self.cfg.max_update, self.consistency_weight)
        return self.consistency_weight

    def _consistency(self, model, net_input, s_feats, mixup: MixupSpec, mask: Tensor) -> Tensor:
        source = model if self.ema_model is None else self.ema_model
        if self.ema_model is not None:
            self.ema_model.eval()  # the EMA target has no dropout (criterion.train() undoes it)
        with torch.no_grad():
            _, c_extra = source(**net_input, request=self._student_request(None))
        clean = self._student_features(c_extra)
        total = 0.0
        for key, mixed in s_feats.items():
            obj = key.split(".")[0]
            # the embedding output is the mixing point itself: mixed = lam e_i + (1-lam) e_j
            # by construction, and its "consistency" would only pull e_i and e_j together
            if obj not in self.consistency_objects or key == "hidden.emb":
                continue
            total = total + losses.consistency_loss(
                self._consistency_distance(obj), mixed, clean[key], mixup.partner, mixup.lam,
                mask)
        return total

    def _consistency_distance(self, obj: str):
        """The ILD distance of ``obj`` on single tensors (consistency_loss sums over the
        Q/K/V dict entries itself)."""
        if obj == "hidden":
            return partial(losses.hidden_mse, pad_mask_mode=self.pad_mode)
        if obj == "attention":
            return partial(losses.attention_kl, kl=self.cfg.attention_loss == "kl",
                           pad_mask_mode=self.pad_mode)
        return partial(losses.relation_kl, num_relation_heads=self.relation_heads,
                       pad_mask_mode=self.relation_pad_mode)

    def _maybe_update_ema(self, model) -> None:
        """EMA of the student, updated once per optimizer step: at the first training
        forward after it (so a resumed run updates exactly as an uninterrupted one)."""
        done = int(self.task.num_updates)
        if done > int(self.ema_updates):
            losses.ema_update(self.ema_model.parameters(), model.parameters(),
                              self.cfg.ema_decay)
            self.ema_updates.fill_(done)

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """A checkpoint saved before this criterion had parameters (e.g. a tinybert run
        before --hidden-projection always) holds None: keep the fresh ones, say so."""
        if state_dict is None:
            logger.warning("the checkpoint holds no cr_ild criterion state (saved without "
                           "a projection or EMA target): they start fresh")
            return None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def half(self):
        """fairseq halves the criterion under --fp16; the EMA stays fp32 (0.1% steps)."""
        super().half()
        if self.ema_model is not None:
            self.ema_model.float()
        return self

    def to(self, *args, **kwargs):
        """fairseq casts the criterion to bf16 under --bf16; the EMA stays fp32 (a 0.1%
        step is below bf16's resolution: a bf16 EMA would never move)."""
        super().to(*args, **kwargs)
        if self.ema_model is not None:
            self.ema_model.float()
        return self

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


def _comma_list(text: str) -> List[str]:
    return [o.strip() for o in text.split(",") if o.strip()]


def _fit_dense(width_in: int, width_out: int) -> nn.Linear:
    """The authors' fit_dense: a Linear with BERT's initialisation (N(0, 0.02), zero bias)."""
    layer = nn.Linear(width_in, width_out)
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


def _flatten(feats: Dict[str, Any]) -> List[Tensor]:
    out: List[Tensor] = []
    for v in feats.values():
        out.extend(v.values() if isinstance(v, dict) else [v])
    return out
