"""The ``distill_glue`` task: binarised GLUE data for BERT fine-tuning and distillation.

Reads the folder written by ``scripts/prepare_glue.py`` (input0/, input1/, label/,
meta.json), pairs sentences as ``[CLS] a [SEP] b [SEP]`` with token types, truncates
longest-first to ``--max-positions``, and sizes the classification head from the data.
Options reproduce the paper's harder settings: a training subset of K examples and label
noise, both drawn per --seed (or --data-seed).

Batches (``fairseq_crild/data/batching.py``): no example is ever dropped silently (fairseq's
``--required-batch-size-multiple`` drops a final batch of another size); training batches
are length buckets, or, when the criterion mixes inputs (``--train-batches auto``), fresh
random mixup pairs every epoch; ``--drop-last-train-batch`` skips the incomplete last batch
as the authors do.

Folders written by ``scripts/prepare_glue_roberta.py`` (meta ``input_format: roberta``,
fairseq's RoBERTa GLUE layout) are read the RoBERTa way instead: fairseq's dictionary with
``<mask>``, ``<s> a </s> </s> b </s>`` without token types, labels through label/dict.txt;
teachers may then be fairseq ``roberta`` checkpoints and students ``crild_roberta*`` models.
"""


import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, List, Optional

import numpy as np
from fairseq.data import ConcatDataset, Dictionary, FairseqDataset, data_utils, iterators
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, DictConfig, OmegaConf

from fairseq_crild.criterions.contract import MixesExamples, StudentPreparer
from fairseq_crild.data.batching import (
    LAYOUTS,
    BatchingError,
    drop_remainder,
    epoch_rng,
    fresh_pair_batches,
    length_bucket_batches,
)
from fairseq_crild.data.dictionary import vocab_fingerprint
from fairseq_crild.data.glue_tasks import TRAIN_PROBE
from fairseq_crild.data.layout import DataLayout, dict_path, layout_of, load_column
from fairseq_crild.data.meta import META_FILE, GlueMeta, read_meta_file
from fairseq_crild.data.pair_dataset import SentencePairDataset
from fairseq_crild.distill.checkpoint_roles import ROLE_KEY, role_for_criterion
from fairseq_crild.distill.student_init import copy_layers_into, select_source_layers
from fairseq_crild.distill.teacher import (
    FrozenTeacher,
    load_teachers,
    parse_teacher_weights,
    split_teacher_paths,
)
from fairseq_crild.errors import CrildError
from fairseq_crild.models.arch_check import guard_checkpoint_loading
from fairseq_crild.models.bert import BertModel
from fairseq_crild.models.loading import load_checkpoint

logger = logging.getLogger(__name__)

# criterions that read the teacher; evaluating a saved student uses glue_ce instead
TEACHER_CRITERIA = ("kd", "cr_ild")

@dataclass
class _Source:
    """Binarised columns one part of a split reads, with its labels and selected rows."""

    input0: Any
    input1: Any
    labels: Optional[np.ndarray]
    indices: Optional[np.ndarray]

    @property
    def size(self) -> int:
        return len(self.input0) if self.indices is None else len(self.indices)


class GlueDataError(CrildError, ValueError):
    """The binarised data folder is missing something or disagrees with the options."""


@dataclass
class DistillGlueConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "folder written by prepare_glue.py"})
    max_positions: int = field(
        default=128, metadata={"help": "max tokens per example ([CLS] a [SEP] b [SEP]); longer "
                               "pairs are truncated longest-first, as BERT does"}
    )
    classification_head_name: str = field(
        default="glue", metadata={"help": "name of the model head trained for this task"}
    )
    train_subset_size: int = field(
        default=0, metadata={"help": "train on a random subset of this many examples "
                             "(0 = all; the paper's few-sample setting uses 1000, drawn per "
                             "seed); seeded by --data-seed"}
    )
    label_noise: float = field(
        default=0.0, metadata={"help": "probability that a training label is replaced (the "
                               "paper's label-noise setting: 0.3): by a different class drawn "
                               "uniformly; for a regression task (STS-B), by the score of a "
                               "training example drawn uniformly (noise from the training "
                               "distribution of scores); seeded by --data-seed"}
    )
    label_noise_draw: ChoiceEnum(["independent", "exact-count"]) = field(  # type: ignore[valid-type]
        default="independent", metadata={"help": "how --label-noise p picks the labels to "
                                         "flip: 'independent' (default, the authors': each "
                                         "label flipped with probability p) or 'exact-count' "
                                         "(exactly round(p x n) labels, this plugin's earlier "
                                         "draw)"}
    )
    data_seed: int = field(
        default=-1, metadata={"help": "seed of the --train-subset-size / --label-noise draws; "
                              "-1 (default) = --seed, so each training seed draws its own "
                              "subset and noise as the authors do; give a seed (the earlier "
                              "default was 1) to keep one draw across training seeds"}
    )
    pad_to_length: int = field(
        default=0, metadata={"help": "pad every batch to this many tokens (0 = pad to the "
                             "longest in the batch); the paper's reference code pads to 128"}
    )
    train_batches: ChoiceEnum(list(LAYOUTS)) = field(  # type: ignore[valid-type]
        default="auto", metadata={"help": "training batch layout: 'length-buckets' (fairseq's: "
                                  "length-sorted batches built once, their order shuffled per "
                                  "epoch), 'fresh-pairs' (new random mixup partners from the "
                                  "whole split every epoch, drawn from (--seed, epoch); pairs "
                                  "sorted by their longer member and laid out so the reverse "
                                  "rule i <-> B-1-i mixes each pair; random batches under "
                                  "--pad-to-length, as the authors'), or 'auto' (default: "
                                  "fresh-pairs when the criterion mixes inputs, else "
                                  "length-buckets). fresh-pairs ignores "
                                  "--required-batch-size-multiple"}
    )
    drop_last_train_batch: bool = field(
        default=False, metadata={"help": "skip each epoch's incomplete last training batch as "
                                 "the authors do (the n mod --batch-size examples last in the "
                                 "epoch's random order, redrawn every epoch; logged); default "
                                 "off: every example trains every epoch. Needs --batch-size "
                                 "without --max-tokens"}
    )
    teacher_path: str = field(
        default="", metadata={"help": "fine-tuned teacher checkpoint (needed by the kd and "
                              "cr_ild criterions), or several, comma-separated (kd averages "
                              "their soft labels); each loaded once, frozen, never saved"}
    )
    teacher_weights: str = field(
        default="", metadata={"help": "comma-separated weights of the --teacher-path teachers "
                              "in kd's average of soft labels, normalised to sum 1 (empty: "
                              "uniform)"}
    )
    ild_teacher_index: int = field(
        default=0, metadata={"help": "0-based entry of --teacher-path that intermediate-layer "
                             "losses (cr_ild) distil from"}
    )
    resume_from: ChoiceEnum(["newest-intact", "last"]) = field(  # type: ignore[valid-type]
        default="newest-intact", metadata={"help": "where a rerun with the default "
                                           "--restore-file resumes: 'newest-intact' (default; "
                                           "when checkpoint_last.pt is missing, unreadable or "
                                           "older than another checkpoint of --save-dir, e.g. "
                                           "after a kill during its first copy, the newest "
                                           "intact one is copied into its place) or 'last' "
                                           "(fairseq: checkpoint_last.pt, else from scratch)"}
    )
    allow_any_teacher_role: bool = field(
        default=False, metadata={"help": "accept a --teacher-path checkpoint whatever role it "
                                 "records (default off: a stage-1 ILD student, whose head "
                                 "stage 1 never trains, is refused; see checkpoint_roles)"}
    )
    init_student_from: str = field(
        default="", metadata={"help": "checkpoint (e.g. the PRE-TRAINED teacher, converted) "
                              "whose embeddings and layers initialise the student"}
    )
    init_student_layers: str = field(
        default="first", metadata={"help": "source layers copied into the student: 'first' "
                                   "(0..N-1, the paper's PKD init), 'uniform', or '0,2,4'"}
    )
    ild_data: str = field(
        default="", metadata={"help": "supplementary unlabelled text (a prepare_glue.py folder, "
                              "e.g. --task PAIRS): stage 1's ILD inputs, or, with "
                              "--ild-data-mode concat and --criterion kd, extra KD inputs "
                              "the teacher labels (the pipeline's --kd-data)"}
    )
    ild_data_mode: ChoiceEnum(["replace", "concat"]) = field(  # type: ignore[valid-type]
        default="replace", metadata={"help": "train on --ild-data instead of the task's "
                                     "training set, or on both"}
    )
    train_probe_size: int = field(
        default=1000, metadata={"help": "training inputs in the 'train_probe' split (a fixed "
                                "sample drawn with the data seed, from what the training "
                                "split reads: the subset, --ild-data); name it in "
                                "--valid-subset, e.g. 'valid,train_probe', to log the "
                                "criterion's loss on training inputs the way the dev loss is "
                                "computed (eval mode, no mixup)"}
    )
    global_batch_size: int = field(
        default=0, metadata={"help": "examples per optimizer update over all processes (0 = "
                             "off: --batch-size is per process, as in fairseq); sets the "
                             "per-process batch to this / (world size x --update-freq) and "
                             "refuses a launch that does not divide it"}
    )
    seed: int = II("common.seed")


def read_meta(data_dir: str) -> GlueMeta:
    """A prepared folder's meta.json; refused naming the file when it is missing."""
    meta = read_meta_file(data_dir)
    if meta is None:
        raise GlueDataError(
            f"{os.path.join(data_dir, META_FILE)} not found: --data must be a folder written "
            "by scripts/prepare_glue.py (or scripts/prepare_glue_roberta.py)"
        )
    return meta


def _pick_noisy(fraction: float, rng: np.random.RandomState, candidates: np.ndarray,
                draw: str) -> np.ndarray:
    """The candidates whose label the noise replaces: ``independent`` (the authors'): each
    with probability ``fraction``; ``exact-count``: exactly ``round(fraction x n)``."""
    if draw == "independent":
        return candidates[rng.random_sample(len(candidates)) < fraction]
    if draw == "exact-count":
        return rng.choice(candidates, size=int(round(fraction * len(candidates))), replace=False)
    raise GlueDataError(f"--label-noise-draw must be 'independent' or 'exact-count', "
                        f"got {draw!r}")


def apply_label_noise(labels: np.ndarray, fraction: float, num_classes: int,
                      rng: np.random.RandomState, candidates: np.ndarray,
                      draw: str = "independent") -> np.ndarray:
    """Replaces labels of ``candidates`` by a different class drawn uniformly (shift by 1..C-1
    modulo C); returns the indices that were changed.

    ``independent`` (the authors'): each candidate flips with probability ``fraction``, so the
    number flipped is binomial; ``exact-count``: exactly ``round(fraction * len(candidates))``.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    flipped = _pick_noisy(fraction, rng, candidates, draw)
    if num_classes < 2:
        raise GlueDataError("--label-noise needs at least 2 classes")
    shift = rng.randint(1, num_classes, size=len(flipped))
    labels[flipped] = (labels[flipped] + shift) % num_classes
    return flipped


def apply_score_noise(scores: np.ndarray, fraction: float, rng: np.random.RandomState,
                      candidates: np.ndarray, draw: str = "independent") -> np.ndarray:
    """Label noise for regression: the candidates are picked as :func:`apply_label_noise`
    picks them, and each picked score is replaced by the original score of a candidate drawn
    uniformly (with replacement), so the noisy scores keep the training distribution of
    scores; returns the indices that were picked."""
    candidates = np.asarray(candidates, dtype=np.int64)
    picked = _pick_noisy(fraction, rng, candidates, draw)
    donors = candidates[rng.randint(0, len(candidates), size=len(picked))]
    scores[picked] = scores[donors]
    return picked


# path options the generated hydra configs leave as ``???`` for the command line to fill
_PATH_OPTIONS = ("data", "teacher_path", "init_student_from", "ild_data")


def _require_given(cfg: Any) -> None:
    """Name a ``???`` path left unfilled in a hydra config, instead of omegaconf's traceback."""
    if not isinstance(cfg, DictConfig):
        return
    missing = [f"task.{key}" for key in _PATH_OPTIONS if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise GlueDataError(
            f"{', '.join(missing)} must be given: add {' '.join(m + '=PATH' for m in missing)} "
            "to the fairseq-hydra-train command line (the config leaves it as ???)")


@register_task("distill_glue", dataclass=DistillGlueConfig)
class DistillGlueTask(FairseqTask):
    """GLUE classification/regression with BERT inputs (and, for distillation, a teacher).

    Implements the criterion–task contract (``fairseq_crild.criterions.contract``):
    ``DistillTaskState`` (teachers, ILD teacher, weights, ``num_updates``, ``current_epoch``)
    and ``PadsEveryBatch``; prepares the student of a ``StudentPreparer`` criterion.
    """

    cfg: DistillGlueConfig

    def __init__(self, cfg: DistillGlueConfig, dictionary: Dictionary, meta: GlueMeta):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.meta = meta
        self._teachers: Optional[List[FrozenTeacher]] = None
        self.student: Optional[BertModel] = None
        self.current_epoch: int = 1  # 1-based; begin_epoch sets it
        self.num_updates: int = 0  # optimizer updates done; train_step sets it
        self.pad_length = int(cfg.pad_to_length or 0)  # pad_every_batch_to may raise it
        self.criterion_uses_mixup = False  # set by build_criterion; read by --train-batches auto
        self.evaluation_only = False  # set by build_model(from_checkpoint=True): no teacher
        # saved in every checkpoint ("task_state"): lets a later run check that a teacher
        # indexes tokens and labels exactly as its student does
        self.state.merge_state_dict({
            "vocab_sha256": vocab_fingerprint(dictionary),
            "label_names": self.label_names,
            "glue_task": meta.task,
        })

    @classmethod
    def setup_task(cls, cfg: DistillGlueConfig, **kwargs) -> "DistillGlueTask":
        _require_given(cfg)
        meta = read_meta(cfg.data)
        # RoBERTa: fairseq's dict.txt, <mask> appended as RoBERTa's tasks do
        dictionary = layout_of(meta).load_dictionary(dict_path(cfg.data))
        kind = "regression" if meta.regression else f"{meta.num_classes} classes"
        logger.info(f"[{meta.task}] dictionary: {len(dictionary)} types; {kind}")
        if not 0.0 <= cfg.label_noise <= 1.0:
            raise GlueDataError(f"--label-noise must lie in [0, 1], got {cfg.label_noise}")
        return cls(cfg, dictionary, meta)

    @property
    def layout(self) -> DataLayout:
        """The data folder's input layout (dictionary, dataset class, labels)."""
        return layout_of(self.meta)

    @property
    def input_format(self) -> str:
        """``roberta`` (``<s> a </s> </s> b </s>``, no token types) or ``bert``."""
        return self.layout.name

    @property
    def regression(self) -> bool:
        return bool(self.meta.regression)

    @property
    def num_classes(self) -> int:
        return self.meta.num_outputs

    @property
    def label_names(self) -> List[str]:
        return list(self.meta.label_names)

    @property
    def source_dictionary(self) -> Dictionary:
        return self.dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self.dictionary

    def max_positions(self) -> int:
        return self.cfg.max_positions

    def _load_indexed(self, kind: str, split: str, required: bool):
        column = load_column(self.cfg.data, kind, split)
        if column is None and required:
            raise GlueDataError(
                f"{os.path.join(self.cfg.data, kind, split)}.bin not found: split {split!r} "
                f"is missing from {self.cfg.data} (splits present: {self.available_splits()})"
            )
        return column

    def available_splits(self) -> List[str]:
        folder = os.path.join(self.cfg.data, "input0")
        return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".bin"))

    def _load_labels(self, split: str) -> Optional[np.ndarray]:
        return self.layout.load_labels(self.cfg.data, split, self.regression, self.label_names)

    def pair_dataset(self, input0, input1, labels: Optional[np.ndarray],
                     **kwargs) -> SentencePairDataset:
        """Model inputs of binarised columns as this task trains on them (layout,
        --max-positions); ``kwargs``: ``indices``, ``pad_to_length``, ``order_seed``."""
        return self.layout.pair_dataset(self.dictionary, input0, input1, labels,
                                        self.cfg.max_positions, **kwargs)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        if split == TRAIN_PROBE:
            dataset = self._train_probe()
        elif split == "train":
            dataset = self._pairs(self._train_sources())
        else:
            input0 = self._load_indexed("input0", split, required=True)
            dataset = self.pair_dataset(input0, self._load_indexed("input1", split, False),
                                        self._load_labels(split),
                                        pad_to_length=self.pad_length or None,
                                        order_seed=self.cfg.seed)
        self.datasets[split] = dataset
        logger.info(f"{split}: {len(self.datasets[split])} examples")

    def _train_sources(self) -> List[_Source]:
        """What the training split reads: the task's training set (its harder-setting subset
        and labels), --ild-data's unlabelled text instead of it or after it. Drawn once per
        task: the train split and the train_probe sample share one draw (and its log lines)."""
        if getattr(self, "_drawn_train_sources", None) is None:
            self._drawn_train_sources = self._draw_train_sources()
        return self._drawn_train_sources

    def _draw_train_sources(self) -> List[_Source]:
        input0 = self._load_indexed("input0", "train", required=True)
        indices, labels = self._harder_setting(len(input0), self._load_labels("train"))
        own = _Source(input0, self._load_indexed("input1", "train", False), labels, indices)
        if not self.cfg.ild_data:
            return [own]
        extra = self._ild_source()
        if self.cfg.ild_data_mode == "replace":
            return [extra]
        # stage 1 ignores labels; both parts must collate alike
        return [_Source(own.input0, own.input1, None, own.indices), extra]

    def _pairs(self, sources: List[_Source]) -> FairseqDataset:
        parts = [self.pair_dataset(s.input0, s.input1, s.labels, indices=s.indices,
                                   pad_to_length=self.pad_length or None,
                                   order_seed=self.cfg.seed) for s in sources]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def _train_probe(self) -> FairseqDataset:
        """A fixed sample of the training inputs (``--train-probe-size``, drawn with the data
        seed) for ``--valid-subset valid,train_probe``: the criterion's loss on training
        inputs, computed like the dev loss (eval mode, no mixup), so that stage 1 logs the
        ILD loss on training and on dev text side by side (the overfitting curves)."""
        sources = self._train_sources()
        sizes = [s.size for s in sources]
        total = sum(sizes)
        k = min(int(self.cfg.train_probe_size), total)
        rng = np.random.RandomState(self.data_seed)
        picked = np.sort(rng.choice(total, size=k, replace=False))
        probes, start = [], 0
        for source, size in zip(sources, sizes):
            local = picked[(picked >= start) & (picked < start + size)] - start
            start += size
            if len(local):
                base = source.indices if source.indices is not None else np.arange(size)
                probes.append(_Source(source.input0, source.input1, source.labels, base[local]))
        logger.info(f"{TRAIN_PROBE}: {k} of the {total} training inputs (data seed "
                    f"{self.data_seed})")
        return self._pairs(probes)

    def _ild_source(self) -> _Source:
        """--ild-data's unlabelled text: ILD or KD inputs, which need no labels."""
        meta = read_meta(self.cfg.ild_data)
        if (meta.vocab_sha256 != self.meta.vocab_sha256
                or layout_of(meta) != self.layout):
            raise GlueDataError(f"--ild-data {self.cfg.ild_data} was binarised with another "
                                "vocabulary than --data; use the same dict.txt")
        folder = self.cfg.ild_data
        input0 = load_column(folder, "input0", "train")
        if input0 is None:
            raise GlueDataError(f"--ild-data {folder}: no input0/train.bin")
        logger.info(f"ILD data: {len(input0)} examples from {folder} ({self.cfg.ild_data_mode})")
        return _Source(input0, load_column(folder, "input1", "train"), None, None)

    @property
    def data_seed(self) -> int:
        """Seed of the subset / label-noise draws: --data-seed, or --seed when it is -1."""
        return int(self.cfg.seed if self.cfg.data_seed < 0 else self.cfg.data_seed)

    def _harder_setting(self, n: int, labels: Optional[np.ndarray]):
        """The paper's few-sample and label-noise variants, drawn with :attr:`data_seed`."""
        seed = self.data_seed
        rng = np.random.RandomState(seed)
        indices = None
        if self.cfg.train_subset_size:
            k = self.cfg.train_subset_size
            if k > n:
                raise GlueDataError(f"--train-subset-size {k} exceeds the {n} training examples")
            indices = np.sort(rng.choice(n, size=k, replace=False))
            logger.info(f"training on a random subset of {k}/{n} examples (data seed {seed})")
        if self.cfg.label_noise and labels is not None:
            labels = labels.copy()
            pool = indices if indices is not None else np.arange(n)
            noise = apply_score_noise if self.regression else partial(
                apply_label_noise, num_classes=self.num_classes)
            flipped = noise(labels, self.cfg.label_noise, rng=rng, candidates=pool,
                            draw=str(self.cfg.label_noise_draw))
            logger.info(f"label noise: changed {len(flipped)}/{len(pool)} training labels "
                        f"(--label-noise {self.cfg.label_noise}, {self.cfg.label_noise_draw}, "
                        f"data seed {seed})")
        return indices, labels

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        model_format = getattr(model, "input_format", "bert")
        if model_format != self.input_format:
            raise GlueDataError(
                f"--arch {getattr(cfg, '_name', None) or getattr(cfg, 'arch', '?')} takes "
                f"{model_format} inputs but {self.cfg.data} is in {self.input_format} layout; "
                + ("prepare it with scripts/prepare_glue_roberta.py" if model_format == "roberta"
                   else "use a crild_roberta* architecture"))
        if self.cfg.max_positions > model.max_positions():
            raise GlueDataError(
                f"--max-positions {self.cfg.max_positions} exceeds the model's position table "
                f"({model.max_positions()}); lower --max-positions"
            )
        model.register_classification_head(
            self.cfg.classification_head_name, num_classes=self.num_classes
        )
        # --finetune-from-model / --restore-file of another shape: the sizes that differ and
        # the flags that fit, not torch's list of every tensor
        guard_checkpoint_loading(model)
        if from_checkpoint:
            # evaluating a saved model (fairseq-validate, ensembles): its weights come from the
            # checkpoint, so neither the initialisation source nor the teachers are read
            self.evaluation_only = True
        if self.cfg.init_student_from and not from_checkpoint:
            # our layout (a fairseq RoBERTa, e.g. roberta.base's first layers, converted
            # without its heads)
            source = load_checkpoint(self.cfg.init_student_from, head=None,
                                     padding_idx=self.dictionary.pad()).model_state
            n_source = len({k.split(".")[1] for k in source if k.startswith("layers.")})
            layers = select_source_layers(self.cfg.init_student_layers, model.num_layers,
                                          n_source)
            copy_layers_into(model, source, layers)
        if self.cfg.teacher_path and self._teachers is None and not from_checkpoint:
            self._teachers = self.load_teachers()  # training: a wrong path fails before any step
        self.student = model
        return model

    def load_teachers(self) -> List[FrozenTeacher]:
        """Every --teacher-path checkpoint, loaded once and checked against the data; the
        options are checked first so a typo fails before any model is read."""
        paths = split_teacher_paths(self.cfg.teacher_path)
        parse_teacher_weights(self.cfg.teacher_weights, len(paths))
        if not 0 <= self.cfg.ild_teacher_index < len(paths):
            raise GlueDataError(f"--ild-teacher-index {self.cfg.ild_teacher_index} is outside "
                                f"the {len(paths)} teacher(s) of --teacher-path")
        teachers = load_teachers(paths, self.dictionary, self.cfg.classification_head_name,
                                 self.num_classes, self.label_names,
                                 dict_path(self.cfg.data),
                                 allow_any_role=self.cfg.allow_any_teacher_role)
        for path, teacher in zip(paths, teachers):
            if teacher.model.max_positions() < self.cfg.max_positions:
                raise GlueDataError(
                    f"teacher {path}: its position table holds {teacher.model.max_positions()} "
                    f"tokens, fewer than --max-positions {self.cfg.max_positions}; lower "
                    "--max-positions")
        return teachers

    @property
    def teachers(self) -> List[FrozenTeacher]:
        """All teachers, in --teacher-path order (prediction-layer KD averages them)."""
        if self._teachers is None:
            if not self.cfg.teacher_path:
                raise GlueDataError("this criterion distils from a teacher: pass --teacher-path")
            self._teachers = self.load_teachers()
        return self._teachers

    @property
    def teacher_weights(self) -> List[float]:
        """Normalised weights of :attr:`teachers` (--teacher-weights, default uniform)."""
        return parse_teacher_weights(self.cfg.teacher_weights, len(self.teachers))

    @property
    def teacher(self) -> FrozenTeacher:
        """The teacher of intermediate-layer losses (--ild-teacher-index)."""
        return self.teachers[self.cfg.ild_teacher_index]

    def begin_epoch(self, epoch: int, model) -> None:
        self.current_epoch = epoch  # read by criterions with epoch ramp-ups

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self.num_updates = update_num  # read by criterions with update-based schedules / EMA
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def build_criterion(self, cfg, from_checkpoint: bool = False):
        """Lets a criterion prepare the student (e.g. freeze parameters its loss never
        reaches) before fairseq wraps it in DDP and builds the optimizer."""
        name = getattr(cfg, "_name", None)
        if self.evaluation_only and name in TEACHER_CRITERIA:
            # a saved student is evaluated on its labels: its teacher may have moved or be
            # gone, and the student's metrics do not depend on it
            logger.info(f"evaluating a saved student: criterion {name} replaced by glue_ce "
                        "(loss on the labels, the same GLUE metrics); its teacher is not loaded")
            cfg = OmegaConf.create({"_name": "glue_ce"})
        criterion = super().build_criterion(cfg, from_checkpoint)
        role = role_for_criterion(getattr(cfg, "_name", None) or getattr(cfg, "criterion", None))
        if role is not None and not getattr(self, "evaluation_only", False):
            self.state.merge_state_dict({ROLE_KEY: role})  # what the checkpoints are for
        if isinstance(criterion, StudentPreparer) and self.student is not None:
            criterion.prepare_student(self.student)
        self.criterion_uses_mixup = isinstance(criterion, MixesExamples) and bool(
            criterion.use_mixup)
        return criterion

    def build_generator(self, models, args, **kwargs):
        """fairseq-interactive / fairseq-generate decode sequences; this task classifies."""
        raise GlueDataError(
            "distill_glue classifies sentence pairs and generates no text, so "
            "fairseq-interactive and fairseq-generate cannot run it: classify with "
            "scripts/classify.py (or fairseq_crild.export.hub) and score dev with fairseq-validate")

    # ------------------------------------------------------------------ batching
    def pad_every_batch_to(self, length: int) -> None:
        """Pad every batch (train and valid, datasets already loaded included) to ``length``
        tokens, e.g. for losses averaged over the authors' B x 128 grid; 0 = dynamic."""
        if length < 0 or (length and length < self.cfg.max_positions):
            raise GlueDataError(f"pad_every_batch_to({length}): the length must be 0 or at "
                                f"least --max-positions {self.cfg.max_positions} (longer "
                                f"examples would exceed it); lower --max-positions to {length}")
        self.pad_length = int(length)
        for dataset in self.datasets.values():
            for part in getattr(dataset, "datasets", [dataset]):  # ConcatDataset's parts
                if hasattr(part, "pad_to_length"):
                    part.pad_to_length = self.pad_length or None
        logger.info(f"every batch padded to {length} tokens" if length
                    else "batches padded to their longest example")

    def train_layout(self) -> str:
        """The --train-batches layout in force: ``auto`` resolved from the criterion."""
        layout = str(self.cfg.train_batches)
        if layout == "auto":
            return "fresh-pairs" if self.criterion_uses_mixup else "length-buckets"
        return layout

    def _is_train(self, dataset) -> bool:
        return dataset is self.datasets.get("train")

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None,
                           max_positions=None, ignore_invalid_inputs=False,
                           required_batch_size_multiple=1, seed=1, num_shards=1, shard_id=0,
                           num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False,
                           grouped_shuffling=False, update_epoch_batch_itr=False):
        """fairseq's iterator, with batches that never drop an example silently (fairseq's
        ``--required-batch-size-multiple`` drops a final batch of another size) and, for
        training, the --train-batches layout and --drop-last-train-batch."""
        can_reuse = (not disable_iterator_cache and not update_epoch_batch_itr
                     and self.can_reuse_epoch_itr(dataset))
        if can_reuse and dataset in self.dataset_to_epoch_iter:
            return self.dataset_to_epoch_iter[dataset]
        assert isinstance(dataset, FairseqDataset)
        dataset.set_epoch(epoch)
        sizes = self._sizes(dataset)
        batch_sampler = self._batch_sampler(dataset, sizes, max_tokens, max_sentences,
                                            required_batch_size_multiple, seed)
        epoch_iter = iterators.EpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater, batch_sampler=batch_sampler,
            seed=seed, num_shards=num_shards, shard_id=shard_id, num_workers=num_workers,
            epoch=epoch, buffer_size=data_buffer_size,
            skip_remainder_batch=skip_remainder_batch, grouped_shuffling=grouped_shuffling,
            reuse_dataloader=getattr(self.cfg, "reuse_dataloader", True),
            persistent_workers=getattr(self.cfg, "persistent_workers", True))
        if can_reuse:
            self.dataset_to_epoch_iter[dataset] = epoch_iter
        return epoch_iter

    @staticmethod
    def _sizes(dataset) -> np.ndarray:
        sizes = getattr(dataset, "sizes", None)
        if sizes is None:
            sizes = dataset.num_tokens_vec(np.arange(len(dataset)))
        sizes = np.asarray(sizes, dtype=np.int64)
        return sizes if sizes.ndim == 1 else sizes.max(axis=1)

    def _batch_sampler(self, dataset, sizes: np.ndarray, max_tokens, max_sentences,
                       multiple: int, seed: int):
        """Frozen batches (evaluation, length buckets) or a callable ``(dataset, epoch)``
        fairseq calls at every epoch (fresh pairs, drop-last), resumes included."""
        train = self._is_train(dataset)
        layout = self.train_layout() if train else "length-buckets"
        drop_last = train and bool(self.cfg.drop_last_train_batch)
        if drop_last and (max_sentences is None or max_tokens is not None):
            raise BatchingError("--drop-last-train-batch needs fixed-size batches: give "
                                "--batch-size and no --max-tokens")
        if train:
            logger.info(f"training batches: {layout}"
                        + (f" (--train-batches auto, criterion mixup: "
                           f"{self.criterion_uses_mixup})"
                           if self.cfg.train_batches == "auto" else "")
                        + (", incomplete last batch skipped" if drop_last else ""))
        if layout == "fresh-pairs":
            def fresh(ds, epoch: int) -> List[np.ndarray]:
                batches, skipped = fresh_pair_batches(
                    sizes, seed, epoch, max_sentences, max_tokens, drop_last, self.pad_length)
                if drop_last:
                    logger.info(f"epoch {epoch}: skipped {skipped} of {len(sizes)} training "
                                "examples (--drop-last-train-batch)")
                return batches
            return fresh
        with data_utils.numpy_seed(seed):  # today's order (ordered_indices draws its own)
            order = dataset.ordered_indices()
        if not drop_last:
            return length_bucket_batches(order, sizes, max_tokens, max_sentences, multiple)

        def buckets_drop_last(ds, epoch: int) -> List[np.ndarray]:
            # the authors skip a random n mod B examples per epoch; the rest, still length
            # ordered, fill batches of exactly B
            keep = drop_remainder(epoch_rng(seed, epoch).permutation(len(order)),
                                  max_sentences)[0]
            kept = np.asarray(order, dtype=np.int64)[np.isin(order, keep)]
            logger.info(f"epoch {epoch}: skipped {len(order) - len(kept)} of {len(order)} "
                        "training examples (--drop-last-train-batch)")
            return [kept[i:i + max_sentences] for i in range(0, len(kept), max_sentences)]
        return buckets_drop_last
