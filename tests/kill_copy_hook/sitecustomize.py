"""Test hook (on PYTHONPATH only in tests/test_kill_resume.py): SIGKILL this process half-way
through the first atomic copy to the file named by $CRILD_KILL_DURING_COPY_TO, the moment a
real kill would leave ``checkpoint_1_5.pt`` intact and no ``checkpoint_last.pt``."""

import os
import shutil
import signal

_TARGET = os.environ.get("CRILD_KILL_DURING_COPY_TO")
if _TARGET:
    _copyfileobj = shutil.copyfileobj

    def _dies_half_way(src, dst, length=0):
        if str(getattr(dst, "name", "")).endswith(_TARGET + ".copying"):
            size = os.fstat(src.fileno()).st_size
            dst.write(src.read(size // 2))
            dst.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return _copyfileobj(src, dst, length) if length else _copyfileobj(src, dst)

    shutil.copyfileobj = _dies_half_way
