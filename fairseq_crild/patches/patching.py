"""The one way this plugin patches fairseq: once per process, each patch recorded with the
fairseq releases it was written against.

The patched points (``checkpoint_safety``, ``atomic_checkpoints``, ``distributed``,
``optim.param_groups``) are private fairseq functions whose signatures and call sites may
change between releases, so every patch names the versions it was checked on; a run on
another fairseq version logs one warning per patch. :func:`patch_once` is idempotent: a
function that is already a patch of ours (marked ``_crild_patched``) is left alone, so
importing the plugin twice (``--user-dir`` and a direct import) never wraps a wrapper.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Dict, Tuple, Union

logger = logging.getLogger(__name__)

#: The fairseq releases the patches were written against and checked on: fairseq 0.12.2,
#: and fairseq-fixed 0.12.3.1 (the same code, built for Python >= 3.11; see setup.py).
FAIRSEQ_VERSIONS: Tuple[str, ...] = ("0.12.2", "0.12.3.1")

KINDS = ("function", "staticmethod", "classmethod")


@dataclass(frozen=True)
class Patch:
    """One applied patch: the patched attribute, why, and the fairseq versions it targets."""

    target: str
    why: str
    fairseq: Tuple[str, ...]


#: Every patch applied in this process, by target (``"fairseq.module.name"``).
PATCHES: Dict[str, Patch] = {}


def _owner_name(owner: Union[ModuleType, type]) -> str:
    if isinstance(owner, ModuleType):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


def installed_fairseq_version() -> str:
    import fairseq

    return str(getattr(fairseq, "__version__", "unknown"))


def calling(replacement: Callable[..., Any]) -> Callable[[Any], Callable[..., Any]]:
    """The ``wrap`` of :func:`patch_once` for a replacement that takes the original first:
    ``replacement(original, *args, **kwargs)``."""
    return lambda original: functools.partial(replacement, original)


def patch_once(owner: Union[ModuleType, type], name: str,
               wrap: Callable[[Any], Callable[..., Any]], why: str, kind: str = "function",
               fairseq: Tuple[str, ...] = FAIRSEQ_VERSIONS) -> bool:
    """Replaces ``owner.name`` by ``wrap(original)`` unless it is already our patch; returns
    whether it patched. ``kind``: ``"function"`` (a module function or a plain method),
    ``"staticmethod"`` or ``"classmethod"`` (``wrap`` then gets the classmethod object and
    returns the function to wrap in a new classmethod)."""
    if kind not in KINDS:
        raise ValueError(f"patch_once: kind must be one of {KINDS}, got {kind!r}")
    current = owner.__dict__[name] if kind == "classmethod" else getattr(owner, name)
    marked = current.__func__ if kind == "classmethod" else current
    target = f"{_owner_name(owner)}.{name}"
    if getattr(marked, "_crild_patched", False):
        return False
    patched = functools.update_wrapper(wrap(current), marked)
    patched._crild_patched = True
    patched._crild_fairseq = fairseq
    if kind == "staticmethod":
        setattr(owner, name, staticmethod(patched))
    elif kind == "classmethod":
        setattr(owner, name, classmethod(patched))
    else:
        setattr(owner, name, patched)
    PATCHES[target] = Patch(target, why, fairseq)
    version = installed_fairseq_version()
    if version not in fairseq:
        logger.warning(f"fairseq-crild patches {target} ({why}) for fairseq "
                       f"{' / '.join(fairseq)}; this is fairseq {version}: check that it "
                       "still fits")
    return True
