"""Local launcher: W worker slots, each run in its own process (sweeps.launch.worker).

A crash, divergence or kill of one run never stops the launcher: the run's status says
what happened and the rest go on. Runs already done (or diverged) are skipped, interrupted
ones resume from their checkpoint, and each run is trained only under its RunLock, so two
launchers on one runs dir share the work instead of repeating it (a run locked elsewhere
is retried until its owner finishes it or dies).

CPU threads are divided between the slots: slot i is pinned to its own cores
(sched_setaffinity, inherited by the trainer) and told its thread count through
OMP_NUM_THREADS and friends; with several GPUs each slot gets its own (CUDA_VISIBLE_DEVICES).
The launcher is single-threaded (it polls), so it stays cheap with thousands of runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scaling import runs
from sweeps.launch.worker import EXIT_LOCKED, EXIT_TERMINATED

RETRY_LOCKED_S = 1.0


@dataclass
class Progress:
    """What the launcher knows right now (passed to `on_update`)."""

    total: int
    states: dict[Path, str] = field(default_factory=dict)  # final or current state per run
    running: set[Path] = field(default_factory=set)
    elsewhere: set[Path] = field(default_factory=set)  # locked by another launcher

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)


def cpu_slots(workers: int, threads_per_worker: int | None = None) -> list[list[int]]:
    """Core sets for each worker slot: the usable cores split evenly (a slot never gets 0)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))
    k = threads_per_worker or max(1, len(cores) // workers)
    return [[cores[(i * k + j) % len(cores)] for j in range(k)] for i in range(workers)]


def gpu_ids() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def worker_env(slot: int, cores: list[int], gpus: list[str]) -> dict[str, str]:
    n = str(len(cores))
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
           "OPENBLAS_NUM_THREADS": n}
    if len(cores) == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


def _branch_source(run_dir: Path) -> Path | None:
    try:
        wsd = runs.read_config_json(run_dir).get("wsd") or {}
    except runs.UserError:
        return None
    if not wsd.get("branch_of"):
        return None
    try:
        return runs.safe_child(run_dir.parent, wsd["branch_of"])
    except runs.UserError:
        return None  # the worker refuses it and marks the run failed


def run_local(run_dirs: Sequence[str | os.PathLike], *, workers: int = 1,
              threads_per_worker: int | None = None,
              train_cmd: Sequence[str] | None = None,
              on_update: Callable[[Progress], None] | None = None,
              poll_s: float = 0.2, retry_failed: bool = True) -> Progress:
    """Train every run in `run_dirs` that is not finished; returns the final Progress.

    `train_cmd` replaces ``python -m scaling_cli train --quiet`` (RUN_DIR is appended): the
    test hook for a fake trainer. Failed runs are retried once per call when
    `retry_failed` (a crash may be transient); diverged runs never are (it would diverge
    again). SIGTERM/SIGINT stop the workers (each trainer checkpoints) and re-raise as
    KeyboardInterrupt.
    """
    dirs = [Path(d) for d in run_dirs]
    progress = Progress(total=len(dirs))
    queue: list[Path] = []
    for d in dirs:
        state = runs.settle_state(d)
        if state == "done" or state == "diverged" or (state == "failed" and not retry_failed):
            progress.states[d] = state
        else:
            progress.states[d] = "pending"
            queue.append(d)
    slots = cpu_slots(workers, threads_per_worker)
    gpus = gpu_ids()
    free = list(range(workers))
    active: dict[Path, tuple[subprocess.Popen, int]] = {}
    retry_at: dict[Path, float] = {}
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    handlers = {}
    for s in (signal.SIGTERM, signal.SIGINT):
        try:
            handlers[s] = signal.signal(s, on_signal)
        except ValueError:  # not the main thread: the caller handles signals
            pass
    try:
        while queue or active:
            if stop["signal"] is not None:
                _stop_all(active)
                raise KeyboardInterrupt
            now = time.monotonic()
            for d in list(queue):
                if not free:
                    break
                if retry_at.get(d, 0) > now:
                    continue
                source = _branch_source(d)
                if source is not None:
                    source_state = runs.effective_state(source)
                    if source_state in ("failed", "diverged"):
                        progress.states[d] = "failed"
                        runs.write_status(d, "failed", reason=f"its stable run {source.name} "
                                          f"{source_state}")
                        queue.remove(d)
                        continue
                    if source_state != "done":
                        continue
                slot = free.pop(0)
                cmd = [sys.executable, "-m", "sweeps.launch.worker", str(d)]
                if train_cmd is not None:
                    cmd += ["--", *train_cmd]
                proc = subprocess.Popen(cmd, env=worker_env(slot, slots[slot], gpus),
                                        stdin=subprocess.DEVNULL)
                try:
                    os.sched_setaffinity(proc.pid, slots[slot])
                except (AttributeError, OSError):
                    pass
                active[d] = (proc, slot)
                queue.remove(d)
                progress.running.add(d)
                progress.elsewhere.discard(d)
                progress.states[d] = "running"
            for d, (proc, slot) in list(active.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del active[d]
                free.append(slot)
                free.sort()
                progress.running.discard(d)
                if rc == EXIT_LOCKED:
                    progress.elsewhere.add(d)
                    progress.states[d] = "running"
                    retry_at[d] = time.monotonic() + RETRY_LOCKED_S
                    queue.append(d)
                    continue
                if rc == EXIT_TERMINATED and stop["signal"] is None:
                    queue.append(d)  # stopped by someone else's SIGTERM: run it again
                    progress.states[d] = "pending"
                    continue
                progress.states[d] = _final_state(d, rc)
            if on_update is not None:
                on_update(progress)
            if queue or active:
                time.sleep(poll_s)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if on_update is not None:
        on_update(progress)
    return progress


def _final_state(run_dir: Path, rc: int) -> str:
    try:
        state = runs.effective_state(run_dir)
    except runs.UserError:
        return "failed"
    if state in runs.TERMINAL_STATES:
        return state
    if rc == 0:
        return "done"
    return "failed"


def _stop_all(active: dict[Path, tuple[subprocess.Popen, int]], grace_s: float = 60.0) -> None:
    for proc, _ in active.values():
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for proc, _ in active.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
