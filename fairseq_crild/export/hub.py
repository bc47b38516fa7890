"""Classify sentence pairs with a trained checkpoint from Python, fairseq hub-style.

    from fairseq_crild.export.hub import GlueClassifier
    clf = GlueClassifier.from_pretrained("runs/quickstart/runs/RTE/cr_ild/seed1/stage2",
                                         data_name_or_path="data-bin/RTE")
    clf.predict([("A man is playing.", "Someone plays.")])      # -> ['entailment']

Inputs go through the same WordPiece tokenizer, ``[CLS] a [SEP] b [SEP]`` pairing and
longest-first truncation as training (:class:`SentencePairDataset`), so a sentence gets the
prediction it would get in the dev evaluation. The data folder written by prepare_glue.py
supplies the dictionary, the label names and the lower-casing setting; by default it is the
one the checkpoint was trained on (``task.data`` in the checkpoint). Inputs are truncated at
the checkpoint's training ``--max-positions`` (its saved task config; 128 in the paper's
recipe), not at the position table: the length the dev evaluation used
(:mod:`fairseq_crild.export.inference_length`); ``max_positions=`` changes it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from fairseq.data import ListDataset

from fairseq_crild.data.inference import head_forward, predict_logits
from fairseq_crild.data.pair_dataset import SentencePairDataset
from fairseq_crild.data.tokenization import build_tokenizer, encode_texts
from fairseq_crild.distill.checkpoint_roles import check_role
from fairseq_crild.distill.teacher import TeacherMismatchError, check_compatible
from fairseq_crild.errors import CrildError
from fairseq_crild.export.inference_length import inference_max_positions
from fairseq_crild.models import roberta_conversion as rc
from fairseq_crild.models.bert import BertModel
from fairseq_crild.models.loading import head_sizes, load_checkpoint, read_checkpoint
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

Example = Union[str, Tuple[str, str]]


def _checkpoint_path(model_name_or_path: str, checkpoint_file: str) -> str:
    if os.path.isdir(model_name_or_path):
        return os.path.join(model_name_or_path, checkpoint_file)
    return model_name_or_path


def _trained_data_folder(state: Dict[str, Any], checkpoint: str) -> str:
    task = rc.task_config_dict(state)
    data = task.get("data")
    if not data or not os.path.isdir(str(data)):
        raise FileNotFoundError(
            f"{checkpoint}: the data folder it was trained on ({data!r}) is not here; pass "
            "data_name_or_path (--data) = the prepare_glue.py folder with its dict.txt")
    return str(data)


# (the checkpoint's GLUE task, the data's) pairs that belong together: AX is scored by an
# MNLI model (GLUE's diagnostic set has MNLI's labels)
COMPATIBLE_TASKS = {("MNLI", "AX")}


def check_glue_task(state: Dict[str, Any], path: str, data: str, data_task: Optional[str],
                    override: str = "--allow-other-task (Python: allow_other_task=True)") -> None:
    """Refuses a checkpoint trained on another GLUE task than ``data``'s (an RTE model on a
    WNLI folder would print WNLI label names for RTE predictions)."""
    saved = (state.get("task_state") or {}).get("glue_task")
    if not saved or not data_task or saved == data_task or (saved, data_task) in \
            COMPATIBLE_TASKS:
        return
    raise ClassifierMismatchError(
        f"{path} was trained on {saved} but {data} holds {data_task}: pass the {saved} "
        f"folder as --data, or {override} to apply it to {data_task} anyway")


class ClassifierMismatchError(CrildError, ValueError):
    """The checkpoint does not fit the data folder (task, labels, vocabulary) or its role."""


def add_loading_options(parser, verb: str) -> None:
    """The options every command that runs a saved classifier shares (crild-classify,
    crild-predict): truncation length and the overrides of :func:`load_checked`'s checks."""
    parser.add_argument("--max-positions", type=int, default=None,
                        help="truncate each input (longest-first) to this many tokens "
                             "(default: the checkpoint's training --max-positions, as its dev "
                             "evaluation; at most the model's position table)")
    parser.add_argument("--allow-any-role", action="store_true",
                        help=f"{verb} with a checkpoint whatever role it records (default off: "
                             "a stage-1 ILD student, whose head was never trained, is refused)")
    parser.add_argument("--allow-other-task", action="store_true",
                        help=f"{verb} --data of another GLUE task than the checkpoint's "
                             "(default off: refused, except MNLI checkpoints on AX; labels and "
                             "head size are checked regardless)")


def load_checked(path: str, task: DistillGlueTask, allow_any_role: bool = False,
                 allow_other_task: bool = False, state: Optional[Dict[str, Any]] = None
                 ) -> BertModel:
    """The classifier model of ``path`` for ``task``'s data, after the checks the teacher
    loader makes (vocabulary, head, label names) plus its role and GLUE task. Shared by the
    hub and :func:`predict_split`."""
    head = task.cfg.classification_head_name
    ckpt = load_checkpoint(path, head, task.dictionary.pad(), saved=state)
    if not allow_any_role:
        check_role(ckpt.saved, path, "classifier", ckpt.heads, head,
                   "--allow-any-role (Python: allow_any_role=True)")
    if not allow_other_task:
        check_glue_task(ckpt.saved, path, task.cfg.data, task.meta.task)
    try:
        check_compatible(ckpt.state, path, task.dictionary, head, task.num_classes,
                         task.label_names, os.path.join(task.cfg.data, "input0", "dict.txt"),
                         what="checkpoint")
    except TeacherMismatchError as err:
        raise ClassifierMismatchError(str(err)) from None
    return ckpt.build(task.dictionary)


class GlueClassifier(torch.nn.Module):
    """A ``bert`` checkpoint with its classification head, tokenizer and label names."""

    def __init__(self, model: BertModel, task: DistillGlueTask, lowercase: bool = True):
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.tokenizer = build_tokenizer(task.dictionary, lowercase)
        self.max_positions = min(task.cfg.max_positions, model.max_positions())

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "checkpoint_best.pt",
                        data_name_or_path: Optional[str] = None,
                        max_positions: Optional[int] = None, allow_any_role: bool = False,
                        allow_other_task: bool = False) -> "GlueClassifier":
        """``model_name_or_path``: a checkpoint file, or a folder holding ``checkpoint_file``
        (fairseq's hub convention). Refused: a checkpoint whose role is not a classifier's (a
        stage-1 ILD student, a converted base without a head) unless ``allow_any_role``; one
        trained on another GLUE task than the data's unless ``allow_other_task``; one whose
        vocabulary, head size or labels differ from the data's (always). ``max_positions``:
        truncation length of each input (default None: the checkpoint's training
        ``--max-positions``, as its dev evaluation; at most the model's position table)."""
        path = _checkpoint_path(model_name_or_path, checkpoint_file)
        state = read_checkpoint(path)
        if not allow_any_role:  # before the data folder: a base names no training data
            head = DistillGlueConfig.classification_head_name
            check_role(state, path, "classifier", head_sizes(state["model"]), head,
                       "--allow-any-role (Python: allow_any_role=True)")
        data = data_name_or_path or _trained_data_folder(state, path)
        task = DistillGlueTask.setup_task(DistillGlueConfig(data=data))
        if task.input_format != "bert":
            raise ValueError(f"{data} is a {task.input_format} folder: GlueClassifier tokenises "
                             "with BERT's WordPiece; use scripts/predict_glue.py on data "
                             "prepared by prepare_glue_roberta.py")
        model = load_checked(path, task, allow_any_role, allow_other_task, state)
        task.cfg.max_positions = inference_max_positions(
            state, model.max_positions(), max_positions, path,
            "max_positions (scripts: --max-positions)")
        return cls(model, task, lowercase=task.meta.lowercase)

    @property
    def regression(self) -> bool:
        return self.task.regression

    @property
    def labels(self) -> List[str]:
        return self.task.label_names

    def _dataset(self, examples: Sequence[Example]) -> SentencePairDataset:
        pairs = [(e, None) if isinstance(e, str) else (e[0], e[1]) for e in examples]
        if self.task.meta.is_pair and any(b is None for _, b in pairs):
            raise ValueError(f"{self.task.meta.task} classifies sentence pairs: give "
                             "(sentence1, sentence2) tuples")
        if not self.task.meta.is_pair and any(b is not None for _, b in pairs):
            raise ValueError(f"{self.task.meta.task} classifies single sentences")

        def column(texts: List[str]) -> ListDataset:
            ids = [torch.tensor(x, dtype=torch.long) for x in encode_texts(self.tokenizer, texts)]
            return ListDataset(ids, sizes=[len(x) for x in ids])

        input0 = column([a for a, _ in pairs])
        input1 = column([b for _, b in pairs]) if self.task.meta.is_pair else None
        return self.task.layout.pair_dataset(self.task.dictionary, input0, input1, None,
                                             self.max_positions)

    @torch.inference_mode()
    def logits(self, examples: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """(N, classes) logits, or (N,) scores for a regression task, in input order."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: give a positive number of examples "
                             "per batch (e.g. 32)")
        dataset = self._dataset(examples)
        if not len(dataset):
            return torch.empty((0,) if self.regression else (0, self.task.num_classes))
        device = next(self.model.parameters()).device
        forward = head_forward(self.model, self.task.cfg.classification_head_name)
        logits = predict_logits(forward, dataset, batch_size, device=device)
        return logits.view(-1) if self.regression else logits

    def predict(self, examples: Sequence[Example], batch_size: int = 32) -> List[Union[str, float]]:
        """Label names (classification) or scores (STS-B)."""
        logits = self.logits(examples, batch_size)
        if self.regression:
            return logits.tolist()
        return [self.labels[i] for i in logits.argmax(-1).tolist()]

    def predict_proba(self, examples: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """(N, classes) softmax probabilities, columns in the order of :attr:`labels`."""
        if self.regression:
            raise ValueError("predict_proba: a regression task has scores, not probabilities")
        return self.logits(examples, batch_size).softmax(-1)


@torch.inference_mode()
def predict_split(checkpoint: str, data: str, split: str, batch_size: int = 64,
                  allow_any_role: bool = False, allow_other_task: bool = False,
                  max_positions: Optional[int] = None) -> Tuple[DistillGlueTask, List[str]]:
    """(task, predictions of a prepared split in example order: label names, or scores with
    3 decimals): what crild-predict writes. The checkpoint is checked against ``data`` as
    :meth:`GlueClassifier.from_pretrained` checks it (role, GLUE task, vocabulary, head,
    labels), and the split is read binarised, not re-tokenised. ``max_positions``: truncation
    length (None: the checkpoint's training ``--max-positions``)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: give a positive number (e.g. 64)")
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, "checkpoint_best.pt")
    state = read_checkpoint(checkpoint)
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=data))
    model = load_checked(checkpoint, task, allow_any_role, allow_other_task, state)
    task.cfg.max_positions = inference_max_positions(state, model.max_positions(),
                                                     max_positions, checkpoint)
    model.eval()
    task.load_dataset(split)
    ds = task.dataset(split)
    if not len(ds):
        return task, []
    logits = predict_logits(head_forward(model, task.cfg.classification_head_name), ds,
                            batch_size)
    if task.regression:
        return task, [f"{v:.3f}" for v in logits.view(-1).tolist()]
    return task, [task.label_names[i] for i in logits.argmax(-1).tolist()]
