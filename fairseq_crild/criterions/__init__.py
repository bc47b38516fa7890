"""Criterions register on import (fairseq does not scan this folder of a user-dir)."""

from fairseq_crild.criterions import glue_ce  # noqa: F401
