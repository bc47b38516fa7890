"""The installed commands: name -> (``module:function``, what it does).

Plain data without imports: setup.py reads this file (``console_scripts``) without importing
the package, and ``python -m fairseq_crild`` lists and dispatches it.
"""

COMMANDS = {
    "crild-convert": ("fairseq_crild.cli.convert:main",
                      "Hugging Face BERT folder -> fairseq checkpoint, dict.txt"),
    "crild-prepare": ("fairseq_crild.cli.prepare:console_main",
                      "GLUE task -> binarised folder for --task distill_glue"),
    "crild-prepare-roberta": ("fairseq_crild.cli.prepare_roberta:console_main",
                              "GLUE task -> BPE-encoded folder for RoBERTa models"),
    "crild-pipeline": ("fairseq_crild.cli.pipeline:main",
                       "teacher, stage 1, stage 2 and report for one task and method"),
    "crild-hydra-train": ("fairseq_crild.cli.hydra_train:main",
                          "fairseq-hydra-train with the plugin imported first"),
    "crild-write-configs": ("fairseq_crild.cli.write_configs:main",
                            "write the hydra configs (absolute common.user_dir)"),
    "crild-options": ("fairseq_crild.cli.options_help:main",
                      "every option of the plugin's components, with its help"),
    "crild-export-hf": ("fairseq_crild.cli.export_hf:main",
                        "student -> transformers classifier folder (parity checked)"),
    "crild-export-hf-bert": ("fairseq_crild.cli.export_hf_bert:main",
                             "bert checkpoint -> transformers folder (encoder or head)"),
    "crild-export-onnx": ("fairseq_crild.cli.export_onnx:main",
                          "student -> ONNX classifier (checked with onnxruntime)"),
    "crild-classify": ("fairseq_crild.cli.classify:main",
                       "label sentence pairs with a student (labels by name)"),
    "crild-predict": ("fairseq_crild.cli.predict:main",
                      "predictions for a prepared split (GLUE submission files)"),
    "crild-benchmark": ("fairseq_crild.cli.benchmark:console_main",
                        "speed and memory of the distillation steps"),
    "crild-benchmark-inference": ("fairseq_crild.cli.benchmark_inference:main",
                                  "inference latency / throughput of teacher and student"),
    "crild-summarize": ("fairseq_crild.cli.summarize:main",
                        "tables with paired intervals and plots from the pipeline's reports"),
    "crild-compare": ("fairseq_crild.cli.compare:main",
                      "the pipeline for methods x seeds of one task, N runs at a time"),
    "crild-supplementary": ("fairseq_crild.cli.supplementary:main",
                            "supplementary ILD text (pairs or sentences) from other GLUE tasks"),
}
