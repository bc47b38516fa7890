"""fairseq-crild: CR-ILD and baseline distillation of BERT models, as a fairseq --user-dir.

fairseq imports only ``models/`` and ``tasks/`` of a user-dir by itself; everything else that
registers (criterions) is imported here.
"""

from fairseq_crild.patches import atomic_checkpoints, checkpoint_safety, distributed

checkpoint_safety.install()
atomic_checkpoints.install()  # checkpoint copies a kill cannot leave half-written
distributed.install()  # fairseq's distributed paths on CPU (gloo), see patches/distributed.py

from fairseq_crild import criterions, models, optim, tasks  # noqa: E402,F401

__version__ = "0.1.0"
