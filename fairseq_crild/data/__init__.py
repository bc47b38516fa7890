"""GLUE data for fairseq-crild.

* :mod:`~fairseq_crild.data.glue_tasks`: task specs (official TSV layouts, label orders,
  metrics) and a strict reader raising ``GlueFormatError`` with file and line;
* :mod:`~fairseq_crild.data.tokenization`: BERT WordPiece straight into dictionary ids;
* :mod:`~fairseq_crild.data.binarize`: ``prepare_task`` (what ``scripts/prepare_glue.py``
  runs) and readers of its output (``load_labels``, ``read_index``);
* :mod:`~fairseq_crild.data.meta`: a folder's ``meta.json`` as one typed object
  (:class:`~fairseq_crild.data.meta.GlueMeta`), its one reader and writer;
* :mod:`~fairseq_crild.data.pair_dataset`: the ``[CLS] a [SEP] b [SEP]`` dataset the task
  trains on (:mod:`~fairseq_crild.data.roberta_data`: RoBERTa's layout);
* :mod:`~fairseq_crild.data.layout`: which of the two a folder is in (dictionary, dataset
  class, labels), and the one memory-mapped column reader;
* :mod:`~fairseq_crild.data.dictionary`: BERT vocabularies as fairseq dictionaries (below the
  models, whose conversions order embedding rows by it);
* :mod:`~fairseq_crild.data.metrics`: the GLUE dev metrics from summable statistics;
* :mod:`~fairseq_crild.data.inference`: the one loop that batches a dataset through a model.

The data layer imports no model: it sits below ``models``.

Nothing is imported here, so that importing one module does not pull in the others.
"""
