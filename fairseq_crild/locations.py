"""Where the plugin lives, for ``--user-dir`` and ``common.user_dir``.

fairseq resolves a relative ``--user-dir fairseq_crild`` against the current directory, so it
works only from a source checkout's root. The absolute folder of the imported package works
from anywhere, for a checkout and an installed wheel alike: ``python -m fairseq_crild
--user-dir`` prints it.
"""

import os

USER_DIR: str = os.path.dirname(os.path.abspath(__file__))
RELATIVE_USER_DIR = "fairseq_crild"  # what the source checkout's commands and configs use


def user_dir() -> str:
    """The absolute path to pass as ``--user-dir`` / ``common.user_dir``."""
    return USER_DIR


def absolute_user_dir(args: list) -> list:
    """``args`` with a ``--user-dir fairseq_crild`` (relative) replaced by :func:`user_dir`,
    so fairseq finds the plugin whatever the current directory."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--user-dir" and out[i + 1] == RELATIVE_USER_DIR:
            out[i + 1] = USER_DIR
    return out
