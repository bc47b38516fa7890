"""Writing output folders so that a failure never leaves half-written or clobbered results.

Everything is built in a temporary sibling folder and moved into place only on success; an
existing non-empty folder is refused unless the caller asked to overwrite it, and even then
the old folder is removed only after the new one is complete.

Two more guards:

* an output that equals, contains or lies inside one of the command's inputs is refused
  (:func:`check_not_an_input`): ``--overwrite`` would otherwise delete the inputs;
* temporaries are named ``OUT.tmp-<host>-<pid>-*`` / ``OUT.old-<host>-<pid>-*``; those of a
  process that no longer runs on this machine (killed mid-write), and untagged ones of older
  versions, are removed on the next write of the same output
  (:func:`clean_stale_temporaries`). If the kill fell between moving the previous results
  aside and moving the new ones in, the previous results are moved back first: nothing that
  was complete is ever deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from typing import Iterator, Mapping, Optional

from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)


class OutputExistsError(CrildError, FileExistsError):
    """The output folder already holds results and overwriting was not requested."""


class OutputOverlapsInputError(OutputExistsError, ValueError):
    """The output would replace, or be written into, one of the command's inputs."""


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def _same(a: str, b: str) -> bool:
    """Same place, through symlinks, bind mounts and hard links."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: str, parent: str) -> bool:
    """Whether ``child`` lies strictly inside ``parent`` (real paths; also through a mount
    or link of ``parent`` that shares no spelling with it)."""
    c, p = _real(child), _real(parent)
    if c != p and os.path.commonpath([c, p]) == p:
        return True
    if not os.path.isdir(parent):
        return False
    up = os.path.dirname(c)
    while up and up != os.path.dirname(up):  # an existing ancestor that is ``parent``
        if os.path.exists(up) and _same(up, parent):
            return True
        up = os.path.dirname(up)
    return False


def check_not_an_input(out: str, inputs: Mapping[str, Optional[str]],
                       out_flag: str = "--out") -> None:
    """Refuses an output ``out`` that equals, contains or lies inside an input.

    ``inputs`` maps each input's option name (``--glue-dir``, ``--dict``, ...) to its path
    (None: not given). Why: outputs are replaced as a whole, so with ``--overwrite`` an
    output that is, or holds, an input deletes it; one inside an input folder mixes results
    into the data. Raises :class:`OutputOverlapsInputError` naming both options.
    """
    for flag, path in inputs.items():
        if not path:
            continue
        if _same(out, path):
            how = "is"
        elif _inside(path, out):
            how = "contains"
        elif _inside(out, path):
            how = "lies inside"
        else:
            continue
        raise OutputOverlapsInputError(
            f"{out_flag} {out} {how} the input {flag} {path}: writing it would replace or mix "
            f"with that input; choose an {out_flag} outside every input")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _writer_tag() -> str:
    return f"{_host_tag()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its folder
    return True


def clean_stale_temporaries(out: str) -> None:
    """Removes ``OUT.tmp-*`` / ``OUT.old-*`` left by writers of ``out`` that were killed.

    A temporary is stale when its tag names this machine and a process that no longer runs,
    or when it has no tag (older versions). Temporaries of live processes and of other
    machines are kept. If ``out`` is missing and a stale ``OUT.old-*`` holds the previous
    results (a kill between the two renames of a replacement), it is moved back first.
    """
    parent = os.path.dirname(os.path.abspath(out))
    base = os.path.basename(os.path.abspath(out))
    if not os.path.isdir(parent):
        return
    pattern = re.compile(re.escape(base) + r"\.(tmp|old)-(?:([0-9a-f]{8})-(\d+)-)?[a-z0-9_]{8}$")
    stale = {"tmp": [], "old": []}
    for name in os.listdir(parent):
        m = pattern.match(name)
        full = os.path.join(parent, name)
        if not m or not os.path.isdir(full) or os.path.islink(full):
            continue
        kind, host, pid = m.groups()
        if host is None or (host == _host_tag() and not _pid_alive(int(pid))):
            stale[kind].append(full)
    if stale["old"] and not os.path.lexists(out):
        newest = max(stale["old"], key=os.path.getmtime)
        os.replace(newest, out)
        stale["old"].remove(newest)
        logger.warning(f"{out}: restored the previous results from {newest} (left by an "
                       "interrupted replacement)")
    for full in stale["tmp"] + stale["old"]:
        shutil.rmtree(full, ignore_errors=True)
        logger.warning(f"removed {full}, left by an interrupted write of {out}")


def check_output_dir(out_dir: str, overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuses an existing non-directory or non-empty folder (unless ``overwrite``), after
    cleaning up temporaries of killed writers (:func:`clean_stale_temporaries`)."""
    clean_stale_temporaries(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{out_dir} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise OutputExistsError(
            f"{out_dir} already exists and is not empty; pass {flag} to replace it"
        )


def _ordinary_permissions(folder: str, umask: int) -> None:
    """Files as a plain ``open`` would create them (0666 minus the umask), folders 0777
    minus it: some writers (safetensors) create 0600 files, which a shared result folder
    must not keep."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str, overwrite: bool = False, flag: str = "--overwrite"
                      ) -> Iterator[str]:
    """Yields a temporary folder; on success it replaces ``out_dir``, on error it vanishes."""
    check_output_dir(out_dir, overwrite, flag)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tag = _writer_tag()
    tmp = tempfile.mkdtemp(prefix=f"{os.path.basename(out_dir)}.tmp-{tag}-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; results are shared like any
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _ordinary_permissions(tmp, umask)
    old = None
    if os.path.isdir(out_dir):
        old = tempfile.mkdtemp(prefix=f"{os.path.basename(out_dir)}.old-{tag}-", dir=parent)
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
    clean_stale_temporaries(path)
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass {flag} to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{os.path.basename(path)}.tmp-{_writer_tag()}-", dir=parent)
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
