from fairseq_crild.tasks import distill_glue  # noqa: F401
