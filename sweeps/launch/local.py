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
from scaling.errors import UserError
from sweeps.launch.worker import EXIT_LOCKED, EXIT_TERMINATED

RETRY_LOCKED_S = 1.0


@dataclass
class Progress:
    """What the launcher knows right now (passed to `on_update`)."""

    total: int
    states: dict[Path, str] = field(default_factory=dict)  # final or current state per run
    running: set[Path] = field(default_factory=set)

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
        return runs.safe_child(run_dir.parent, wsd["branch_of"]) if wsd.get("branch_of") else None
    except UserError:
        return None  # the worker refuses it and marks the run failed


class _Slots:
    """The launcher's worker slots: which run each trains, and the queue of runs waiting."""

    def __init__(self, queue: list[Path], progress: Progress, workers: int,
                 threads_per_worker: int | None, train_cmd: Sequence[str] | None) -> None:
        self.queue, self.progress, self.train_cmd = queue, progress, train_cmd
        self.cores, self.gpus = cpu_slots(workers, threads_per_worker), gpu_ids()
        self.free = list(range(workers))
        self.active: dict[Path, tuple[subprocess.Popen, int]] = {}
        self.retry_at: dict[Path, float] = {}

    def _blocked(self, d: Path) -> bool:
        """Whether `d` must wait (its WSD stable run is not done; marked failed if that failed)."""
        source = _branch_source(d)
        if source is None:
            return False
        source_state = runs.effective_state(source)
        if source_state in ("failed", "diverged"):
            self.progress.states[d] = "failed"
            runs.write_status(d, "failed", reason=f"its stable run {source.name} {source_state}")
            self.queue.remove(d)
        return source_state != "done"

    def start_ready(self) -> None:
        now = time.monotonic()
        for d in list(self.queue):
            if not self.free:
                break
            if self.retry_at.get(d, 0) <= now and not self._blocked(d):
                self._start(d)

    def _start(self, d: Path) -> None:
        slot = self.free.pop(0)
        cmd = [sys.executable, "-m", "sweeps.launch.worker", str(d)]
        if self.train_cmd is not None:
            cmd += ["--", *self.train_cmd]
        proc = subprocess.Popen(cmd, env=worker_env(slot, self.cores[slot], self.gpus),
                                stdin=subprocess.DEVNULL)
        try:
            os.sched_setaffinity(proc.pid, self.cores[slot])
        except (AttributeError, OSError):
            pass
        self.active[d] = (proc, slot)
        self.queue.remove(d)
        self.progress.running.add(d)
        self.progress.states[d] = "running"

    def reap(self, stopping: bool) -> None:
        """Collect the workers that exited; requeue a run locked elsewhere or stopped by
        someone else's SIGTERM."""
        for d, (proc, slot) in list(self.active.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.active[d]
            self.free = sorted([*self.free, slot])
            self.progress.running.discard(d)
            if rc == EXIT_LOCKED:  # another launcher trains it: look again later
                self.progress.states[d] = "running"
                self.retry_at[d] = time.monotonic() + RETRY_LOCKED_S
                self.queue.append(d)
            elif rc == EXIT_TERMINATED and not stopping:
                self.queue.append(d)
                self.progress.states[d] = "pending"
            else:
                self.progress.states[d] = _final_state(d, rc)


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
    skip = ("done", "diverged") if retry_failed else ("done", "diverged", "failed")
    for d in dirs:
        state = runs.settle_state(d)
        progress.states[d] = state if state in skip else "pending"
    slots = _Slots([d for d in dirs if progress.states[d] == "pending"], progress, workers,
                   threads_per_worker, train_cmd)
    stop: list[int] = []  # the signals received
    handlers = {}
    for s in (signal.SIGTERM, signal.SIGINT):
        try:
            handlers[s] = signal.signal(s, lambda signum, frame: stop.append(signum))
        except ValueError:  # not the main thread: the caller handles signals
            pass
    try:
        while slots.queue or slots.active:
            if stop:
                _stop_all(slots.active)
                raise KeyboardInterrupt
            slots.start_ready()
            slots.reap(stopping=bool(stop))
            if on_update is not None:
                on_update(progress)
            if slots.queue or slots.active:
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
    except UserError:
        return "failed"
    return state if state in runs.TERMINAL_STATES else "done" if rc == 0 else "failed"


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
