"""Run one run directory under its lock: ``python -m sweeps.launch.worker RUN_DIR [-- CMD...]``.

The launchers start one worker per run. The worker takes the run's RunLock (exit 75 at
once if a live owner holds it: another launcher is training it), skips a run that is
already finished, and otherwise runs the trainer as its own child process,
``python -m scaling_cli train RUN_DIR`` by default (CMD, with RUN_DIR appended, replaces it:
the documented test hook). The child inherits the lock (scaling.lock.INHERITED_LOCK_ENV)
and dies with the worker (PR_SET_PDEATHSIG), so a killed worker never leaves a trainer
running without its lock. The trainer's output goes to RUN_DIR/train.log.

A WSD branch (config.json "wsd": {"branch_of", "branch_step"}) is first seeded from its
stable run's checkpoint (sweeps.wsd.start_from); a stable run is trained with
``--keep-steps`` at its branches' start points.

Exit: 0 done, 1 diverged or failed (status.json says why), 75 locked elsewhere, 143
stopped by SIGTERM (checkpointed, resumable), 2 bad input.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scaling import runs
from scaling.errors import EXIT_TERMINATED, UserError
from scaling.host_env import tuned_environ
from scaling.lock import RunLock

EXIT_LOCKED = 75
DEFAULT_TRAIN_CMD = (sys.executable, "-m", "scaling_cli", "train", "--quiet")
TOUCH_EVERY_S = 15.0
LOG_FILE = "train.log"


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _last_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return None
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else None


def run_worker(run_dir: str | os.PathLike, train_cmd: list[str] | tuple[str, ...] | None = None,
               stale_after: float = runs.DEFAULT_STALE_AFTER_S) -> int:
    run_dir = Path(run_dir)
    lock = RunLock(run_dir, stale_after=stale_after)
    if not lock.acquire(blocking=False):
        return EXIT_LOCKED
    try:
        return _train_locked(run_dir, lock, list(train_cmd or DEFAULT_TRAIN_CMD))
    finally:
        lock.release()


def _train_locked(run_dir: Path, lock: RunLock, train_cmd: list[str]) -> int:
    state = runs.settle_state(run_dir)
    if state == "done":
        return 0
    if state == "diverged":
        return 1
    extra = _wsd_args(run_dir)
    if extra is None:
        return EXIT_LOCKED  # a branch whose stable run is not there yet: retry later
    cmd = [*train_cmd, *extra, str(run_dir)]
    env = tuned_environ({**os.environ, **lock.child_env()})
    terminated = False

    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} worker {os.getpid()}: "
                  f"{' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)

        def forward(signum, frame):
            nonlocal terminated
            terminated = True
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while True:
                try:
                    rc = proc.wait(timeout=TOUCH_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    lock.touch()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    state = runs.settle_state(run_dir)
    if state == "done":
        return 0
    if state in ("diverged", "failed"):
        return 1
    if terminated or rc in (EXIT_TERMINATED, -signal.SIGTERM):
        runs.write_status(run_dir, "pending", reason="stopped by SIGTERM; resumes from its checkpoint")
        return EXIT_TERMINATED
    why = f"trainer exited with code {rc}" if rc >= 0 else f"trainer killed by signal {-rc}"
    last = _last_line(run_dir / LOG_FILE)
    runs.write_status(run_dir, "failed", reason=f"{why}: {last}" if last else why)
    return 1


def _wsd_args(run_dir: Path) -> list[str] | None:
    """Extra trainer flags for a WSD stable run; seeds a branch from its stable run."""
    wsd = runs.read_config_json(run_dir).get("wsd") or {}
    if wsd.get("keep_steps"):
        return ["--keep-steps", ",".join(str(s) for s in wsd["keep_steps"])]
    if wsd.get("branch_of"):
        try:
            source = runs.safe_child(run_dir.parent, wsd["branch_of"])
        except UserError as e:
            runs.write_status(run_dir, "failed", reason=f"wsd.branch_of: {e}")
            raise
        step = int(wsd["branch_step"])
        has_ckpt = (run_dir / "checkpoints").exists() and any(
            p.name.isdigit() for p in (run_dir / "checkpoints").iterdir())
        if not has_ckpt:
            if not (source / "checkpoints" / str(step)).exists():
                runs.write_status(run_dir, "pending", reason=f"waiting for {source.name} to reach "
                                  f"step {step}")
                return None
            # Lazy: sweeps.wsd loads JAX and orbax (3 s, 200 MB), which only a branch needs.
            from sweeps.wsd import start_from

            start_from(run_dir, source, step)
    return []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = None
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    if len(argv) != 1:
        print("usage: python -m sweeps.launch.worker RUN_DIR [-- TRAIN_CMD...]", file=sys.stderr)
        return 2
    try:
        return run_worker(argv[0], cmd)
    except UserError as e:
        print(f"worker: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
