"""Running the recipe: idempotent stages around ``fairseq-train``, log parsing, the report.

Each stage runs ``python -m fairseq_cli.train`` in its own save dir. A finished stage leaves
``done.json`` (wall time, best dev) and is skipped on rerun; an interrupted one is simply
rerun: fairseq resumes from its ``checkpoint_last.pt``. While a stage runs, every fairseq
log record of training progress becomes a line ``[stage] update 40/120 (33%) ... ETA 4m10s``
(:class:`Progress`: the total is the stage's ``--total-num-update``).
"""

import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StageFailed(CrildError, RuntimeError):
    pass


def parse_log(path: str, kind: str = "valid") -> List[Dict[str, Any]]:
    """The records fairseq printed for ``kind`` (valid / train_inner / train), from logs in
    its ``json`` or ``simple`` format, keys prefixed as in json (``valid_accuracy``)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return parse_lines(f, kind)


def parse_lines(lines, kind: str = "valid") -> List[Dict[str, Any]]:
    """:func:`parse_log` of lines already read."""
    records = []
    marker = f"| {kind} | "
    for line in lines:
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


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def total_updates(args: List[str]) -> Optional[int]:
    """The updates a stage is scheduled for: its ``--total-num-update`` (the recipe's
    schedule, already capped by ``--max-update``), else ``--max-update``; None if neither."""
    for flag in ("--total-num-update", "--max-update"):
        if flag in args:
            i = args.index(flag)
            if i + 1 < len(args) and int(args[i + 1]) > 0:
                return int(args[i + 1])
    return None


class Progress:
    """Updates done / total and an ETA from fairseq's ``num_updates`` log records.

    The rate is measured over this process only: from its start for a fresh stage, from the
    first record after a resume (the updates before it ran in an earlier process); the ETA is
    the remaining updates at that rate."""

    def __init__(self, total: Optional[int], resuming: bool = False, clock=time.time):
        self.total, self.clock = total, clock
        self.start = clock()
        self.base: Optional[tuple] = None if resuming else (self.start, 0)

    def update(self, num_updates: int) -> str:
        now = self.clock()
        if self.base is None:
            self.base = (now, num_updates)
        t0, n0 = self.base
        text = (f"update {num_updates}/{self.total} ({100.0 * num_updates / self.total:.0f}%)"
                if self.total else f"update {num_updates}")
        done_here = num_updates - n0
        if done_here > 0:
            per = (now - t0) / done_here
            text += f", {per:.2f} s/update"
            if self.total:
                text += f", ETA {_format_duration(per * max(0, self.total - num_updates))}"
        return text


_NUM_UPDATES = re.compile(r'num_updates"?\s*[:=]?\s*"?(\d+)')


def num_updates_of(line: str) -> Optional[int]:
    """``num_updates`` of a fairseq train_inner / train record, in its json
    (``"num_updates": "10"``) or simple (``num_updates=10``, ``num_updates 10``) format."""
    if "| train_inner |" not in line and "| train |" not in line:
        return None
    match = _NUM_UPDATES.search(line)
    return int(match.group(1)) if match else None


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
    progress = Progress(total_updates(args), resuming)
    cmd = [sys.executable, "-m", "fairseq_cli.train", *args]
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f
        log.write("# " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if quiet:
                continue
            done = num_updates_of(line)
            if done is not None:  # train_inner (every --log-interval) or an epoch's end
                print(f"[{name}] {progress.update(done)} | {_summary(line)}", flush=True)
            elif "| valid |" in line:
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
