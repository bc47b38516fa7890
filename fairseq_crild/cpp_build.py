"""Builds this project's small C++ CPU kernels (hash dropout, the fused relation KL).

One place decides how they compile: torch.utils.cpp_extension.load_inline at first use
(cached under $TORCH_EXTENSIONS_DIR), ``-O3 -march=native -fopenmp`` (so at::parallel_for
runs its OpenMP region; its GOMP symbols resolve to the runtime torch has already loaded),
one build per CPU kind (a home folder shared by different machines must not hand an AVX-512
build to a CPU without it), and one error that names the option to switch off when there is
no compiler or ninja.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
from typing import Any, Sequence, Type

from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)


class CppKernelUnavailable(CrildError, RuntimeError):
    """A C++ kernel could not be built (no compiler, ninja or headers)."""


def cpu_key() -> str:
    """Short digest of this CPU's model and flags: the kernels are built with -march=native."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor() or platform.machine()]
    return hashlib.sha1("".join(lines).encode()).hexdigest()[:10]


def _ninja_on_path() -> None:
    """pip's ninja outside an activated virtual environment is not on PATH: put it there."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def load_cpu_kernel(name: str, source: str, functions: Sequence[str], option: str,
                    fallback: str, error: Type[CppKernelUnavailable] = CppKernelUnavailable
                    ) -> Any:
    """Compiles (or loads the cached build of) ``source`` exporting ``functions``.

    ``option`` is the command-line choice that asked for the kernel and ``fallback`` the one
    that avoids it: both appear in the error raised when the build fails.
    """
    from torch.utils.cpp_extension import load_inline

    _ninja_on_path()
    logger.info("%s: loading its C++ kernel (the first build takes a minute)", option)
    try:
        return load_inline(f"{name}_{cpu_key()}", cpp_sources=source, functions=list(functions),
                           extra_cflags=["-O3", "-march=native", "-fopenmp"])
    except Exception as err:  # compiler, ninja or headers missing
        raise error(
            f"{option}: building its C++ kernel failed ({type(err).__name__}: {err}); install "
            f"a C++ compiler and `pip install ninja`, or use {fallback}"
        ) from err
