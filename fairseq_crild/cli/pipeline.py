"""The whole recipe for one GLUE task and method, ending with a report.

``crild-pipeline`` is the installed command; ``python scripts/run_pipeline.py`` runs the same
``main`` from a source checkout.

    crild-pipeline --task RTE --method cr_ild --glue-dir GLUE --out runs/x \\
        [--seed 1] [--budget cpu|table|paper|smoke] [--setting full|few_sample|label_noise]
        [--base minilm|HF_DIR] [--student-layers 3] [--teacher CKPT]
        [--device auto|cpu|cuda] [--bf16 | --fp16] [--dry-run]

convert the pretrained model -> prepare data -> fine-tune the teacher (or reuse --teacher /
an earlier run's) -> stage 1 ILD (methods pkd, tinybert, minilm, l_ild, cr_ild,
cr_ild_release, bert_emd) -> stage 2 (kd, or glue_ce for 'finetune') -> report.json /
report.md / dev_curve.png. Finished stages are reused; an interrupted stage resumes from its
checkpoint when the command is rerun. Every stage runs on --device (auto: CUDA when this
machine has it, else the CPU) in --bf16 / --fp16 / fp32; each prints its updates done / total
and an ETA as fairseq logs them.
"""

import argparse
import logging
import os
import sys

from fairseq_crild.errors import CrildError
from fairseq_crild.pipeline import recipe
from fairseq_crild.pipeline.run import run

__all__ = ["main", "run"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True, choices=sorted(recipe.METHODS))
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--out", required=True, help="folder for every artefact of the pipeline")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget", default="cpu", help="paper | cpu | table | smoke")
    p.add_argument("--setting", default="full", choices=recipe.SETTINGS,
                   help="full GLUE (default), few_sample (1,000 training examples drawn per "
                   "seed; paper teacher 20 epochs) or label_noise (each training label "
                   "flipped with p=0.3; the students distil from the teacher's last "
                   "checkpoint, as the authors)")
    p.add_argument("--base", default="minilm", help="pretrained HF BERT folder or 'minilm'")
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--teacher", default=None, help="reuse this fine-tuned teacher checkpoint")
    p.add_argument("--quiet", action="store_true", help="only stage start/end lines")
    p.add_argument("--device", default="auto", choices=recipe.DEVICES,
                   help="where every stage trains: auto (default: CUDA when this machine has a "
                   "CUDA device, else the CPU), cpu (--cpu) or cuda (one GPU)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="bfloat16 in every stage (CPU or GPU; fp32 master weights)")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="float16 in every stage (CUDA only)")
    p.set_defaults(precision="fp32")
    p.add_argument("--relation-kl-impl", default="torch", choices=recipe.RELATION_KL_IMPLS,
                   help="stage 1's Q/K/V relation KL: torch (default: eager ops) or cpp (one "
                   "C++ pass per side and term on the CPU, built at first use; equal up to "
                   "float32 rounding, not bit for bit: give it its own --out, as for --bf16)")
    p.add_argument("--dropout-impl", default="torch", choices=recipe.DROPOUT_IMPLS,
                   help="every stage's dropout masks: torch (default) or hash, a counter-based "
                   "mask computed in parallel on the CPU (a C++ kernel built at first use; "
                   "same distribution, its own random stream, so results differ draw by draw: "
                   "give it its own --out, as for --bf16)")
    p.add_argument("--ild-data", default=None, metavar="FOLDER",
                   help="unlabelled sentence pairs for stage 1 (a folder with train.tsv, "
                   "header sentence1<TAB>sentence2, e.g. ../shared/data/supplementary/"
                   "QNLI-pairs): ILD runs on them instead of the task's training set")
    p.add_argument("--ild-data-mode", default="replace", choices=("replace", "concat"),
                   help="stage 1 on --ild-data alone (default, the paper's supplementary "
                   "ILD) or on it and the task's training set")
    p.add_argument("--kd-data", default=None, metavar="FOLDER",
                   help="unlabelled sentence pairs added to the task's training set in "
                   "stage 2, labelled by the teacher (kd only: its hard-label term is off)")
    p.add_argument("--ild-probe-every", type=int, default=0, metavar="N",
                   help="stage 1 logs its ILD loss on dev text and on a fixed sample of its "
                   "training inputs every N updates and at each epoch end (default 0: stage 1 "
                   "never evaluates); training is unchanged; the overfitting curves of "
                   "crild-summarize --ild-curves")
    p.add_argument("--stage2-epochs", type=int, default=0, metavar="N",
                   help="stage 2 for N epochs instead of the budget's (default 0: the "
                   "budget's); e.g. 1 with --kd-data, whose 10,926 QNLI pairs triple an epoch "
                   "of STS-B: about the updates of the student alone in 3. The run's name "
                   "gains +stage2-epochs=N")
    p.add_argument("--stage1-updates", type=int, default=0, metavar="N",
                   help="stage 1 for N updates instead of the budget's epochs (default 0: "
                   "the budget's), with the warm-up, decay and consistency ramp spread over "
                   "them; e.g. --ild-data with as many updates as stage 1 on the task's own "
                   "set, whatever the supplementary set's size. The run's name gains "
                   "+stage1-updates=N")
    p.add_argument("--dry-run", action="store_true", help="print each stage's fairseq-train "
                   "arguments as JSON instead of running them (the pretrained model and the "
                   "data are still converted / prepared)")
    args = p.parse_args(argv)
    if args.ild_probe_every < 0:
        p.error("--ild-probe-every must be 0 (off) or a number of updates")
    if args.stage2_epochs < 0:
        p.error("--stage2-epochs must be 0 (the budget's) or a number of epochs")
    if args.stage1_updates < 0:
        p.error("--stage1-updates must be 0 (the budget's epochs) or a number of updates")
    logging.basicConfig(level=logging.WARNING)  # stage logs go to their train.log files
    for name in ("fairseq", "fairseq_crild", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # an impossible device / precision fails before any conversion
        args.device_flags = recipe.device_args(recipe.resolve_device(args.device),
                                               args.precision, args.dropout_impl)
        report = run(args)
    except (CrildError, ValueError, FileNotFoundError) as err:  # StageFailed, ...
        print(f"run_pipeline: error: {err}", file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
