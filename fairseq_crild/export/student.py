"""A student checkpoint made ready for export: model, dictionary, head and label meaning.

Exports must say what their outputs mean (label names, regression or not) and must be
checked on the inputs the model will see. Both come from the training run itself: fairseq
saves the task's ``task_state`` (label names, GLUE task, vocabulary fingerprint) in every
checkpoint, and the binarised data folder (``prepare_glue.py``, or ``prepare_glue_roberta.py``
for ``crild_roberta`` students) holds the real dev examples and its ``meta.json``. The
model's input layout (BERT's ``[CLS] a [SEP] b [SEP]`` + token types, or RoBERTa's
``<s> a </s> </s> b </s>`` without) decides how dict.txt is read and what the inputs are.
Checkpoints are read through the plugin's safe loader. A checkpoint whose recorded role is not
a classifier's (a stage-1 ILD student: its head was never trained) is refused, as the hub
refuses it, unless ``allow_any_role``. Inputs are truncated at the checkpoint's training
``--max-positions`` (:mod:`fairseq_crild.export.inference_length`): the check batches use it, and so
does the exported tokenizer (``model_max_length``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from fairseq.data import Dictionary
from torch import Tensor

from fairseq_crild.data.dictionary import vocab_fingerprint
from fairseq_crild.data.inference import batched
from fairseq_crild.data.layout import layout_named, layout_of
from fairseq_crild.data.meta import GlueMeta
from fairseq_crild.distill.checkpoint_roles import check_role
from fairseq_crild.errors import CrildError
from fairseq_crild.export.inference_length import inference_max_positions
from fairseq_crild.models.bert import BertModel
from fairseq_crild.models.loading import load_checkpoint

#: parity tolerance on logits: an exported student's predictions equal ours within 1e-4
TOLERANCE = 1e-4

# input_ids, token_type_ids (BERT layout only), attention_mask (int64, B x T)
Batch = Dict[str, Tensor]


class ExportError(CrildError, ValueError):
    """The checkpoint cannot be exported as asked, or the export does not match our model."""


@dataclass
class Classifier:
    """One head of a ``bert`` or ``crild_roberta`` checkpoint, with what its outputs mean."""

    model: BertModel
    dictionary: Dictionary
    head: str
    num_labels: int
    label_names: List[str]
    regression: bool
    glue_task: Optional[str]
    lowercase: bool
    checkpoint: str
    bpe: Optional[str] = None  # RoBERTa data: the BPE its text was encoded with (meta.json)
    #: truncation length of an input (tokens, specials included): the training
    #: --max-positions; 0 = the model's position table
    max_positions: int = 0

    @property
    def input_length(self) -> int:
        """The longest input the export is meant for (its tokenizer's ``model_max_length``)."""
        return self.max_positions or self.model.max_positions()

    @property
    def input_format(self) -> str:
        """``bert`` or ``roberta``: the layout of the ids the model expects."""
        return getattr(self.model, "input_format", "bert")

    @property
    def problem_type(self) -> str:
        """transformers' name for the loss the head was trained with."""
        return "regression" if self.regression else "single_label_classification"

    @property
    def id2label(self) -> Dict[int, str]:
        if self.regression:
            return {0: "score"}
        if self.label_names:
            return dict(enumerate(self.label_names))
        return {i: f"LABEL_{i}" for i in range(self.num_labels)}

    @torch.no_grad()
    def logits(self, batch: Batch) -> Tensor:
        """Our own predictions (eval mode), the reference every export is checked against."""
        self.model.eval()
        out, _ = self.model(batch["input_ids"], token_type_ids=batch.get("token_type_ids"),
                            classification_head_name=self.head)
        return out.float()


def default_dict_path(checkpoint: str, data: Optional[str] = None) -> str:
    """The data folder's dictionary if given, else ``dict.txt`` next to the checkpoint."""
    if data:
        return os.path.join(data, "input0", "dict.txt")
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "dict.txt")


def _choose_head(model: BertModel, head: Optional[str], path: str) -> str:
    heads = list(model.classification_heads.keys())
    if not heads:
        raise ExportError(f"{path}: the checkpoint has no classification head (a pretrained or "
                          "stage-1 encoder?); export a fine-tuned or stage-2 student, or use "
                          "scripts/export_hf_bert.py for the bare encoder")
    if head is None:
        if len(heads) > 1:
            raise ExportError(f"{path}: the checkpoint has heads {heads}; choose one with "
                              "--head-name")
        return heads[0]
    if head not in heads:
        raise ExportError(f"{path}: no head {head!r} in the checkpoint (it has {heads})")
    return head


def _glue_spec(name: Optional[str]):
    if not name:
        return None
    from fairseq_crild.data.glue_tasks import GlueFormatError, get_task

    try:
        return get_task(name)
    except GlueFormatError:  # a task this version does not know: labels stay unnamed
        return None


def load_classifier(checkpoint: str, dict_path: Optional[str] = None,
                    head: Optional[str] = None, data: Optional[str] = None,
                    max_positions: Optional[int] = None,
                    allow_any_role: bool = False) -> Classifier:
    """Loads a student and works out its labels: checkpoint task_state, then the data's
    meta.json, then the GLUE task's definition; contradictions between them are refused.
    Refused as well: a checkpoint whose role is not a classifier's (a stage-1 ILD student)
    unless ``allow_any_role``. ``max_positions``: truncation length (None: the checkpoint's
    training ``--max-positions``)."""
    dict_path = dict_path or default_dict_path(checkpoint, data)
    if not os.path.isfile(dict_path):
        raise ExportError(f"dictionary not found: {dict_path} (pass --dict or --data)")
    ckpt = load_checkpoint(checkpoint)
    input_format = ckpt.input_format
    meta = GlueMeta()  # without --data: nothing recorded
    if data:
        from fairseq_crild.tasks.distill_glue import read_meta

        meta = read_meta(data)
        data_format = layout_of(meta).name
        if data_format != input_format:
            raise ExportError(
                f"{checkpoint}: a {input_format}-layout student but {data} is in "
                f"{data_format} layout; pass the folder it was trained on (prepare_glue"
                f"{'_roberta' if input_format == 'roberta' else ''}.py)")
    # fairseq's RoBERTa dict.txt gains <mask>, as its tasks (and distill_glue) load it
    dictionary = layout_named(input_format).load_dictionary(dict_path)
    raw, state = ckpt.saved, ckpt.state  # a RoBERTa's conversion keeps no task config
    model = ckpt.build(dictionary).eval()
    head = _choose_head(model, head, checkpoint)
    heads = {name: h.out_proj.out_features for name, h in model.classification_heads.items()}
    if not allow_any_role:
        check_role(raw, checkpoint, "classifier", heads, head, "--allow-any-role")
    length = inference_max_positions(raw, model.max_positions(), max_positions, checkpoint)
    num_labels = heads[head]
    task_state: Dict[str, Any] = dict(state.get("task_state") or {})
    if data:
        ours = vocab_fingerprint(dictionary)
        for where, sha in (("the data", meta.vocab_sha256),
                           ("the checkpoint", task_state.get("vocab_sha256"))):
            if sha and sha != ours:
                raise ExportError(f"{dict_path} is not the vocabulary of {where} (fingerprints "
                                  "differ); pass the dict.txt the student was trained with")
    saved, given = list(task_state.get("label_names") or []), list(meta.label_names)
    if saved and given and saved != given:
        raise ExportError(f"{checkpoint} was trained with labels {saved} but {data} has "
                          f"{given}")
    glue_task = task_state.get("glue_task") or meta.task
    spec = _glue_spec(glue_task)
    label_names = saved or given or (list(spec.label_names) if spec is not None else [])
    if meta.regression is not None:
        regression = meta.regression
    elif spec is not None:
        regression = spec.regression
    else:
        regression = num_labels == 1 and not label_names
    if regression and num_labels != 1:
        raise ExportError(f"{checkpoint}: {glue_task or 'the task'} is a regression task but "
                          f"head {head!r} has {num_labels} outputs")
    if not regression and label_names and len(label_names) != num_labels:
        raise ExportError(f"{checkpoint}: head {head!r} has {num_labels} outputs but the task "
                          f"has {len(label_names)} labels {label_names}")
    if not regression and num_labels == 1:
        raise ExportError(f"{checkpoint}: head {head!r} has one output but the task is not a "
                          "regression task")
    return Classifier(model=model, dictionary=dictionary, head=head, num_labels=num_labels,
                      label_names=[] if regression else label_names, regression=regression,
                      glue_task=glue_task, lowercase=meta.lowercase,
                      checkpoint=checkpoint, bpe=meta.bpe, max_positions=length)


def _batch(src_tokens: Tensor, token_types: Optional[Tensor], pad: int,
           input_format: str = "bert") -> Batch:
    """What a tokenizer returns for the layout: RoBERTa inputs carry no token types."""
    batch = {"input_ids": src_tokens.long()}
    if input_format == "bert":
        batch["token_type_ids"] = (torch.zeros_like(src_tokens) if token_types is None
                                   else token_types).long()
    batch["attention_mask"] = src_tokens.ne(pad).long()
    return batch


def real_batches(clf: Classifier, data: str, split: str = "valid", n: int = 64,
                 sizes: tuple = (1, 7, 32)) -> List[Batch]:
    """The first ``n`` examples of a binarised split, in batches of varying size (cycling
    through ``sizes``) and so of varying, padded length: what dynamic axes must handle.
    Truncated at :attr:`Classifier.input_length`, as the exported tokenizer truncates."""
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    task = DistillGlueTask.setup_task(DistillGlueConfig(
        data=data, max_positions=clf.input_length))
    task.load_dataset(split)
    ds = task.dataset(split)
    batches = []
    for collated in batched(ds, sizes, range(min(n, len(ds)))):
        net = collated["net_input"]
        batches.append(_batch(net["src_tokens"], net.get("token_type_ids"), clf.dictionary.pad(),
                              clf.input_format))
    if not batches:
        raise ExportError(f"{data}: split {split!r} has no examples to check the export on")
    return batches


def random_batches(clf: Classifier, n: int = 16, seed: int = 0) -> List[Batch]:
    """``[CLS] a [SEP] b [SEP]`` (RoBERTa: ``<s> a </s> </s> b </s>``) pairs of random tokens,
    for when no data is at hand."""
    return random_pair_batches(clf.dictionary, clf.input_length, clf.input_format, n, seed)


def random_pair_batches(d: Dictionary, input_length: int, input_format: str = "bert",
                        n: int = 16, seed: int = 0) -> List[Batch]:
    """:func:`random_batches` for a dictionary and input layout: pairs of random symbols of
    ``d`` (no specials) up to 48 tokens (at most ``input_length``), in padded batches of 8."""
    g = torch.Generator().manual_seed(seed)
    longest = min(48, input_length)
    rows, types = [], []
    for _ in range(n):
        la, lb = (int(x) for x in torch.randint(1, max(2, longest // 2 - 2), (2,), generator=g))
        a = torch.randint(d.nspecial, len(d), (la,), generator=g)
        b = torch.randint(d.nspecial, len(d), (lb,), generator=g)
        cls_, sep = torch.tensor([d.bos()]), torch.tensor([d.eos()])
        if input_format == "roberta":
            rows.append(torch.cat([cls_, a, sep, sep, b, sep]))
        else:
            rows.append(torch.cat([cls_, a, sep, b, sep]))
        types.append(torch.cat([torch.zeros(la + 2), torch.ones(lb + 1)]).long())
    batches = []
    for s in range(0, n, 8):
        width = max(len(r) for r in rows[s:s + 8])
        ids = torch.full((len(rows[s:s + 8]), width), d.pad(), dtype=torch.long)
        tt = torch.zeros_like(ids)
        for i, (r, t) in enumerate(zip(rows[s:s + 8], types[s:s + 8])):
            ids[i, :len(r)], tt[i, :len(t)] = r, t
        batches.append(_batch(ids, tt, d.pad(), input_format))
    return batches


def check_batches(clf: Classifier, data: Optional[str], split: str = "valid",
                  n: int = 64) -> List[Batch]:
    """Real dev examples when a data folder is given, else random pairs."""
    return real_batches(clf, data, split, n) if data else random_batches(clf)


def max_abs_diff(ours: List[Tensor], theirs: List[Tensor]) -> float:
    return max(float((a.float() - b.float()).abs().max()) for a, b in zip(ours, theirs))


@dataclass
class Parity:
    """How an export compared with our model."""

    max_abs_diff: float
    examples: int
    batches: int
    agree: Optional[int]  # examples with the same predicted class (None for regression)
    max_abs_logit: float = 0.0  # scale of our logits, to read the difference against

    def describe(self, what: str, inputs: str) -> str:
        agree = "" if self.agree is None else f", same predicted class {self.agree}/{self.examples}"
        return (f"parity ({what} vs ours): max |diff| of logits {self.max_abs_diff:.3e} over "
                f"{self.examples} examples in {self.batches} batches ({inputs}; our logits up "
                f"to |{self.max_abs_logit:.3g}|){agree}")


def parity(clf: Classifier, batches: List[Batch], theirs: List[Tensor]) -> Parity:
    ours = [clf.logits(b) for b in batches]
    agree = None
    if not clf.regression:
        agree = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(ours, theirs))
    return Parity(max_abs_diff(ours, theirs), sum(len(b["input_ids"]) for b in batches),
                  len(batches), agree, max(float(o.abs().max()) for o in ours))


def require_parity(diff: float, what: str, tolerance: float = TOLERANCE,
                   values: str = "logits") -> None:
    """The gate of every export: refuses (ExportError) a largest |difference| of ``values``
    above ``tolerance``, NaN included."""
    if not diff <= tolerance:  # NaN fails too
        raise ExportError(f"{what}: max |diff| of {values} {diff:.3e} exceeds {tolerance:g}; "
                          "nothing was written")
