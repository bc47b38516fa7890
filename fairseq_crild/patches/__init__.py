"""The plugin's patches of fairseq, each applied once per process by ``fairseq_crild``'s
``__init__`` (through :func:`~fairseq_crild.patches.patching.patch_once`, which records the
fairseq releases a patch was written against).

* :mod:`~fairseq_crild.patches.checkpoint_safety`: fairseq's checkpoints under torch >= 2.6
  safe loading, one clear error for a foreign or truncated file;
* :mod:`~fairseq_crild.patches.atomic_checkpoints`: checkpoint copies a kill cannot leave
  half-written, and the repair of an interrupted one;
* :mod:`~fairseq_crild.patches.distributed`: fairseq's distributed training on CPU (gloo),
  with the precision checks of :mod:`~fairseq_crild.patches.device` made before a run.

Nothing is imported here, so that the model loader can use the safe reader without
installing the other patches.
"""
