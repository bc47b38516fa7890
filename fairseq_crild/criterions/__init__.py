"""Criterions register on import (fairseq does not scan this folder of a user-dir)."""

from fairseq_crild.criterions import cr_ild, glue_ce, kd  # noqa: F401
