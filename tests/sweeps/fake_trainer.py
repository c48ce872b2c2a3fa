"""A stand-in for `scaling train RUN_DIR` with the same contract, for launcher tests.

Deterministic (the "loss" is a pure function of the config), resumable from its own
checkpoint file, checkpointing every 5 steps and on SIGTERM (exit 143), marking a run with
lr > 1 diverged and a run with seed 666 failed (it crashes). Every completed training
appends a line to RUN_DIR/completions.log, so tests can count how often a run finished;
its GLIBC_TUNABLES goes to RUN_DIR/trainer_env.json.
Step time: $FAKE_STEP_S seconds (default 0.01).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from scaling import runs
from scaling.fileio import atomic_write_json, read_json
from scaling.lock import RunLock


def main() -> int:
    run_dir = Path(sys.argv[-1])
    cfg = runs.read_config_json(run_dir)
    with RunLock(run_dir):
        stop = {"flag": False}
        signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__("flag", True))
        ckpt_path = run_dir / "fake_ckpt.json"
        state = {"step": 0, "h": hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()}
        if ckpt_path.exists():
            state = read_json(ckpt_path)
        n_steps = cfg["n_steps"]
        step_s = float(os.environ.get("FAKE_STEP_S", "0.01"))
        runs.write_status(run_dir, "running", step=state["step"])
        with open(run_dir / "starts.log", "a") as f:  # which job started it, from which step
            f.write(f"{os.environ.get('SLURM_JOB_ID', '-')} {state['step']}\n")
        atomic_write_json(run_dir / "trainer_env.json",  # what the worker tuned for it
                          {"GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")})
        while state["step"] < n_steps:
            if cfg["optim"]["lr"] > 1.0 and state["step"] >= 3:
                runs.write_status(run_dir, "diverged", reason=f"loss is nan at step {state['step']}")
                return 1
            if cfg["seed"] == 666 and state["step"] >= 2:
                raise RuntimeError("simulated crash")
            time.sleep(step_s)
            state = {"step": state["step"] + 1,
                     "h": hashlib.sha256(state["h"].encode()).hexdigest()}
            if state["step"] % 5 == 0 or stop["flag"]:
                atomic_write_json(ckpt_path, state)
                runs.heartbeat(run_dir, state["step"])
            if stop["flag"]:
                runs.write_status(run_dir, "pending", reason="SIGTERM")
                return 143
        loss = 1.0 + int(state["h"][:8], 16) / 16**8
        runs.write_result(run_dir, {"eval_loss": loss, "n_tokens": cfg["n_tokens"],
                                    "steps": n_steps, "h": state["h"]})
        with open(run_dir / "completions.log", "a") as f:
            f.write(f"{os.getpid()}\n")
        runs.write_status(run_dir, "done", step=n_steps)
        return 0


if __name__ == "__main__":
    sys.exit(main())
