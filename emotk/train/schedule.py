"""Fold × seed scheduling: every (fold, seed) run of a request, finished ones skipped, unfinished resumed.

``run_all(ws, configs)`` trains the runs one after the other in this process (or, under torchrun,
all ranks together, one run at a time). With ``slots`` (``emotk train … --gpus 0,1,2``) the runs
are independent subprocesses, one per slot at a time: a slot ``"3"`` runs with
``CUDA_VISIBLE_DEVICES=3`` on ``cuda``, a slot ``"cpu"`` with no GPU visible on the CPU. Each
subprocess is ``python -m emotk.train.schedule RUN_JSON`` — an argument list, never a shell — and
writes its output to ``<run dir>/train.log``. A run that fails does not stop the others; the
failures are listed at the end.

Because a run directory is only ever continued from its last checkpoint, and a finished run is
never retrained, the same command run again after a crash (or Ctrl-C) does only what is left.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from emotk.errors import EmotkError, RunError
from emotk.train.loop import TrainConfig, run_dir, select_parts, train_run
from emotk.workspace import Workspace


@dataclass
class Job:
    key: str  # "fold 2 seed 1"
    argv: list[str]
    env: dict[str, str] | None = None
    log: Path | None = None


@dataclass
class JobResult:
    key: str
    slot: str
    start: float
    end: float
    returncode: int
    log: Path | None


def describe(cfg: TrainConfig) -> str:
    return f"{cfg.model} {'official' if cfg.fold is None else f'fold {cfg.fold}'} seed {cfg.seed}"


def is_finished(ws: Workspace, cfg: TrainConfig) -> dict | None:
    path = run_dir(ws, cfg) / "metrics.json"
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
    except ValueError:
        return None
    return done if done.get("status") == "finished" else None


def slot_env(slot: str) -> tuple[dict[str, str], str]:
    """(environment, device) of a slot: a GPU index, or ``cpu``."""
    env = dict(os.environ)
    if slot == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        return env, "cpu"
    if not slot.isdigit():
        raise EmotkError(f"--gpus takes GPU indices or 'cpu', comma-separated (e.g. 0,1 or cpu,cpu); got {slot!r}.")
    env["CUDA_VISIBLE_DEVICES"] = slot
    return env, "cuda"


def worker_argv(ws: Workspace, cfg: TrainConfig, resume: bool) -> list[str]:
    payload = {"workspace": str(ws.root), "config": asdict(cfg), "resume": resume}
    return [sys.executable, "-m", "emotk.train.schedule", json.dumps(payload)]


def run_pool(jobs: Sequence[Job], slots: Sequence[str], on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
    """Run ``jobs`` as subprocesses, at most one per slot at a time; returns their results in finishing order.

    ``job.env`` is the base environment; the slot's CUDA_VISIBLE_DEVICES is set on top of it.
    """
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    results: list[JobResult] = []
    lock = threading.Lock()

    def worker(slot: str) -> None:
        env_slot, _ = slot_env(slot)
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            env = dict(job.env or os.environ)
            env["CUDA_VISIBLE_DEVICES"] = env_slot["CUDA_VISIBLE_DEVICES"]
            start = time.time()
            if job.log is not None:
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "a", encoding="utf-8") as log:
                    log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} slot {slot}: {job.key}\n")
                    log.flush()
                    rc = subprocess.run(job.argv, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
            else:
                rc = subprocess.run(job.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    check=False).returncode
            result = JobResult(job.key, slot, start, time.time(), rc, job.log)
            with lock:
                results.append(result)
                if on_done:
                    on_done(result)

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def slots_device(slots: Sequence[str]) -> str:
    """The device every run of ``slots`` trains on: ``cpu`` or ``cuda`` (one kind: it is part of a run's identity)."""
    kinds = {slot_env(s)[1] for s in slots}
    if len(kinds) > 1:
        raise EmotkError("--gpus mixes 'cpu' slots and GPU slots; runs on both would differ in precision. Use one kind.")
    return kinds.pop()


def parse_slots(text: str | None) -> list[str] | None:
    if not text:
        return None
    slots = [s.strip() for s in text.split(",") if s.strip()]
    for s in slots:
        slot_env(s)  # validates
    return slots or None


def run_all(ws: Workspace, configs: Sequence[TrainConfig], resume: bool = True, progress: bool = True,
            slots: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> list[tuple[TrainConfig, dict]]:
    """Train every config (skipping finished, continuing unfinished); returns (config, metrics.json) of each.

    Raises RunError listing the runs that failed (the others are finished regardless).
    """
    out: list[tuple[TrainConfig, dict]] = []
    if not slots:
        for cfg in configs:
            result = train_run(ws, cfg, resume=resume, progress=progress)
            out.append((cfg, result))
            echo(_line(cfg, result))
        return out

    jobs, by_key = [], {}
    for cfg in configs:
        done = is_finished(ws, cfg)
        if done is not None:
            echo(_line(cfg, done) + " (already finished)")
            out.append((cfg, done))
            continue
        select_parts(ws, cfg)  # a bad split (leak, unknown fold) fails here, once, not in every subprocess
        key = describe(cfg)
        by_key[key] = cfg
        # the worker sees only its slot's device: the device is decided there (cuda, or cpu for a cpu slot)
        jobs.append(Job(key, worker_argv(ws, cfg, resume), None, run_dir(ws, cfg) / "train.log"))
    failed = []

    def report(r: JobResult) -> None:
        cfg = by_key[r.key]
        if r.returncode == 0 and is_finished(ws, cfg):
            echo(_line(cfg, is_finished(ws, cfg)) + f" (slot {r.slot})")
        else:
            failed.append(r)
            echo(f"{r.key}: failed on slot {r.slot} (exit {r.returncode}); see {r.log}")

    results = run_pool(jobs, list(slots), report)
    for r in results:
        cfg = by_key[r.key]
        done = is_finished(ws, cfg)
        if done is not None:
            out.append((cfg, done))
    if failed:
        lines = "\n".join(f"  {r.key}: exit {r.returncode}, log {r.log}" for r in failed)
        raise RunError(f"{len(failed)} of {len(jobs)} runs failed (the others are finished):\n{lines}\n"
                       "Read the logs, fix the cause and run the same command again: finished runs are kept.")
    return out


def _line(cfg: TrainConfig, result: dict) -> str:
    metric = result["metric"]
    return f"{describe(cfg)}: {metric} = {result['metrics'][metric]:.4f}"


def _worker_main(argv: Sequence[str]) -> int:
    payload = json.loads(argv[0])
    cfg = TrainConfig(**payload["config"])  # its device was set from the slots' kind (see slots_device)
    try:
        ws = Workspace.open(payload["workspace"])
        result = train_run(ws, cfg, resume=payload.get("resume", True), progress=False)
    except EmotkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_line(cfg, result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
