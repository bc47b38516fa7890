"""Using a distilled student outside fairseq-train: from Python
(:mod:`~fairseq_crild.export.hub`, what ``crild-classify`` and ``crild-predict`` run), as
Hugging Face folders and as ONNX files; :mod:`~fairseq_crild.export.inference_length` is the
input length all of them truncate at (the training one).

Every file export is checked against our own model on real inputs before it is kept. The
plugin's registries never import this package, and its modules import transformers, onnx and
onnxruntime only inside the functions that need them (the ``export`` extra of setup.py), so
``fairseq-train`` runs without them.
"""
