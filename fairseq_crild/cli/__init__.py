"""The plugin's commands, one module each with ``main(argv) -> exit status``; installed as
the console scripts listed in :mod:`fairseq_crild.cli.commands` (``scripts/*.py`` in a
source checkout are thin wrappers around the same functions)."""
