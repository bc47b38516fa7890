"""What every command's console entry sets up before its ``main``."""

import logging
import sys
from typing import Iterable


def progress_on_stdout(quiet: Iterable[str] = ("fairseq",)) -> None:
    """Progress notes go to stdout, so that stderr carries only warnings and the one error
    line a command ends with; the named (chatty) loggers are kept to warnings."""
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout, force=True)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
