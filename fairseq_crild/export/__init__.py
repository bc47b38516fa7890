"""Deploying a distilled student outside fairseq: Hugging Face folders and ONNX files.

Every export is checked against our own model on real inputs before it is kept. The plugin's
registries never import this package, and its modules import transformers, onnx and
onnxruntime only inside the functions that need them (the ``export`` extra of setup.py), so
``fairseq-train`` runs without them.
"""
