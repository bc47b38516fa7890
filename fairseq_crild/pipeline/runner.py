"""Running the recipe: idempotent stages around ``fairseq-train``, log parsing, the report.

Each stage runs ``python -m fairseq_cli.train`` in its own save dir. A finished stage leaves
``done.json`` (wall time, best dev) and is skipped on rerun; an interrupted one is simply
rerun: fairseq resumes from its ``checkpoint_last.pt``.
"""

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

logger = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StageFailed(RuntimeError):
    pass


def parse_log(path: str, kind: str = "valid") -> List[Dict[str, Any]]:
    """The records fairseq printed for ``kind`` (valid / train_inner / train), from logs in
    its ``json`` or ``simple`` format, keys prefixed as in json (``valid_accuracy``)."""
    records = []
    if not os.path.isfile(path):
        return records
    marker = f"| {kind} | "
    with open(path, encoding="utf-8") as f:
        for line in f:
            if marker not in line:
                continue
            body = line.split(marker, 1)[1].strip()
            if body.startswith("{"):
                try:
                    rec = json.loads(body)
                except json.JSONDecodeError:
                    continue
            else:  # simple: "epoch 003 | valid on 'valid' subset | loss 0.69 | accuracy 55.9"
                rec = {}
                for part in body.split(" | "):
                    key, _, value = part.strip().partition(" ")
                    if value and " " not in value:
                        rec[key if key == "epoch" else f"{kind}_{key}"] = value
            records.append({k: _number(v) for k, v in rec.items()})
    return records


def _number(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def best_eval(records: List[Dict[str, Any]], metric: str) -> Optional[Dict[str, Any]]:
    """The evaluation with the best ``metric`` (the paper reports each seed's best)."""
    key = f"valid_{metric}"
    scored = [r for r in records if isinstance(r.get(key), float)]
    return max(scored, key=lambda r: r[key]) if scored else None


def run_stage(name: str, save_dir: str, args: List[str], quiet: bool = False) -> Dict[str, Any]:
    """Runs one fairseq-train stage unless it already finished; returns its done record."""
    os.makedirs(save_dir, exist_ok=True)
    done_path = os.path.join(save_dir, "done.json")
    if os.path.isfile(done_path):
        with open(done_path, encoding="utf-8") as f:
            record = json.load(f)
        print(f"[{name}] already done ({record['wall_s']:.0f} s), reusing {save_dir}")
        return record
    log_path = os.path.join(save_dir, "train.log")
    resuming = os.path.isfile(os.path.join(save_dir, "checkpoint_last.pt"))
    print(f"[{name}] {'resuming' if resuming else 'starting'}: log in {log_path}", flush=True)
    start = time.time()
    cmd = [sys.executable, "-m", "fairseq_cli.train", *args]
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f
        log.write("# " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if not quiet and ("| valid |" in line or "| train |" in line):
                print(f"[{name}] {_summary(line)}", flush=True)
        rc = proc.wait()
    wall = time.time() - start
    if rc != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = f.readlines()[-15:]
        raise StageFailed(f"stage {name} failed (exit {rc}); last lines of {log_path}:\n"
                          + "".join(tail))
    record = {"stage": name, "wall_s": wall, "save_dir": save_dir}
    with open(done_path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"[{name}] done in {wall:.0f} s", flush=True)
    return record


def _summary(line: str) -> str:
    try:
        rec = json.loads(line[line.index("{"):])
    except (ValueError, json.JSONDecodeError):
        return line.strip()[-150:]
    keep = [k for k in rec if k.endswith(("loss", "accuracy", "f1", "mcc", "pearson",
                                          "spearman", "num_updates", "epoch", "loss_kd",
                                          "loss_qkv", "loss_cons"))]
    return ", ".join(f"{k}={rec[k]}" for k in keep)
