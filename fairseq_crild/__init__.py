"""fairseq-crild: CR-ILD and baseline distillation of BERT models, as a fairseq --user-dir.

fairseq imports only ``models/`` and ``tasks/`` of a user-dir by itself; everything else that
registers (criterions) is imported here.
"""

from fairseq_crild import checkpoint_safety

checkpoint_safety.install()

from fairseq_crild import criterions, models, tasks  # noqa: E402,F401

__version__ = "0.1.0"
