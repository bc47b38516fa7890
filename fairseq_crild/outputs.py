"""Writing output folders so that a failure never leaves half-written or clobbered results.

Everything is built in a temporary sibling folder and moved into place only on success; an
existing non-empty folder is refused unless the caller asked to overwrite it, and even then
the old folder is removed only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


class OutputExistsError(FileExistsError):
    """The output folder already holds results and overwriting was not requested."""


def check_output_dir(out_dir: str, overwrite: bool, flag: str = "--overwrite") -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{out_dir} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise OutputExistsError(
            f"{out_dir} already exists and is not empty; pass {flag} to replace it"
        )


@contextlib.contextmanager
def atomic_output_dir(out_dir: str, overwrite: bool = False, flag: str = "--overwrite"
                      ) -> Iterator[str]:
    """Yields a temporary folder; on success it replaces ``out_dir``, on error it vanishes."""
    check_output_dir(out_dir, overwrite, flag)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; results are shared like any
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.isdir(out_dir):
        old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".old-", dir=parent)
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_file(path: str, overwrite: bool = False, flag: str = "--overwrite"
                       ) -> Iterator[str]:
    """Yields a temporary path with ``path``'s file name; on success it becomes ``path``.

    The temporary path lies in a fresh sibling folder, so a writer that adds companion files
    named after it (ONNX external data: ``model.onnx.data``) keeps their relative references;
    every file there is moved next to ``path`` at the end. An existing ``path`` (or companion)
    is refused unless ``overwrite``; on error nothing is left behind.
    """
    if os.path.isdir(path):
        raise OutputExistsError(f"{path} is a directory")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass {flag} to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=parent)
    try:
        yield os.path.join(tmp, os.path.basename(path))
        names = sorted(os.listdir(tmp))
        if os.path.basename(path) not in names:
            raise FileNotFoundError(f"nothing was written to {path}")
        clashes = [n for n in names if n != os.path.basename(path)
                   and os.path.exists(os.path.join(parent, n))]
        if clashes and not overwrite:
            raise OutputExistsError(f"{', '.join(clashes)} already exist(s) in {parent}; "
                                    f"pass {flag} to replace")
        umask = os.umask(0)
        os.umask(umask)
        for name in names:  # companions first: the main file appears only when complete
            if name != os.path.basename(path):
                os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
                os.replace(os.path.join(tmp, name), os.path.join(parent, name))
        os.chmod(os.path.join(tmp, os.path.basename(path)), 0o666 & ~umask)
        os.replace(os.path.join(tmp, os.path.basename(path)), path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
