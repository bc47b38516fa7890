"""The distillation domain, apart from fairseq's criterion and task interfaces.

* :mod:`~fairseq_crild.distill.losses`: the method's pure tensor losses (no fairseq);
* :mod:`~fairseq_crild.distill.emd`: BERT-EMD's many-to-many layer mapping;
* :mod:`~fairseq_crild.distill.teacher`: the frozen teacher and its checks against the
  student and the data;
* :mod:`~fairseq_crild.distill.student_init`: a student initialised from chosen layers of a
  larger model;
* :mod:`~fairseq_crild.distill.checkpoint_roles`: what a checkpoint was trained for (teacher,
  stage-1 ILD student, ...), recorded when written and checked when used.

Nothing is imported here, so that importing one module does not pull in the others.
"""
