"""What a GPU machine needs checked, in one command: ``make gpu-check``.

For the day an accelerator is at hand (after ``make install-gpu``). In order, each as its own
process so that one failing does not hide the others:

1. the accelerator: jax's backend and devices, and the bf16 peak the MFU column uses
   (scaling.train.device_peak_flops; "unknown" leaves MFU n/a rather than guessed);
2. throughput and MFU at 124M and 350M parameters (GPT-2 small/medium shapes, batch
   32 x 1024, bf16 compute): ``bench/train_throughput.py --sizes 124M,350M``, which appends
   its own detailed section to BENCHMARKS.md;
3. a tiny sweep end to end on the accelerator: ``scaling demo`` on a 10-run synthetic spec
   (sweep, fit with bootstrap, report, headline), in a temporary runs directory.

Then it appends a summary table (check, result, wall time) with the machine, versions and
date to BENCHMARKS.md. Without an accelerator it says so in one line and exits 2
(``--allow-cpu`` runs the same steps on CPU, slowly: for checking this script itself).
Exit 1 when a check failed. Usage:
    .venv/bin/python bench/gpu_check.py [--allow-cpu] [--seconds 6] [--no-write] [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY_SPEC = """
name = "gpu-check"
[data]
source = "synthetic"
seq_len = 32
eval_tokens = 2048
[budgets]
values = [1e10, 4e10]
[grid]
sizes = 5
span = 16.0
tokens_per_param = 40.0
[optim]
recipe = "tiny-bytes"
[train]
log_every = 25
[checks]
min_steps = 20
[launcher]
workers = 1              # one accelerator: one run at a time
"""

PROBE = """
import jax
from scaling.train import device_peak_flops
d = jax.devices()
peak = device_peak_flops()
print(jax.default_backend(), len(d), d[0].device_kind.replace(' ', '_'),
      'unknown' if peak is None else f'{peak:.3e}')
"""


def commands(python: str, runs_dir: Path, spec: Path, seconds: float, write: bool) -> list:
    throughput = [python, str(REPO / "bench" / "train_throughput.py"), "--sizes", "124M,350M",
                  "--seconds", str(seconds), "--no-torch"] + ([] if write else ["--no-write"])
    demo = [python, "-m", "scaling_cli", "demo", "--spec", str(spec), "--runs-dir",
            str(runs_dir), "--bootstrap", "100"]
    return [("throughput and MFU at 124M and 350M", throughput),
            ("tiny sweep end to end (scaling demo)", demo)]


def run_check(name: str, cmd: list[str], env: dict) -> dict:
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, flush=True)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    last = lines[-1][:160] if lines else ""
    return {"check": name, "ok": proc.returncode == 0, "wall_s": time.monotonic() - t0,
            "result": ("ok: " if proc.returncode == 0 else f"FAILED (exit {proc.returncode}): ")
            + last.replace("|", "/")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run even without an accelerator")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per variant")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    parser.add_argument("--dry-run", action="store_true", help="print the checks, run nothing")
    args = parser.parse_args(argv)
    python = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO),
           # the checks run one after another; none should hold the whole GPU's memory
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        spec = Path(tmp) / "gpu-check.toml"
        spec.write_text(TINY_SPEC)
        checks = commands(python, Path(tmp) / "runs", spec, args.seconds, not args.no_write)
        if args.dry_run:
            for name, cmd in checks:
                print(f"{name}: {' '.join(cmd)}")
            return 0
        probe = subprocess.run([python, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                               text=True)
        if probe.returncode != 0:
            print(f"gpu-check: error: jax could not start: {probe.stderr.strip()[-300:]}",
                  file=sys.stderr)
            return 1
        backend, n_dev, kind, peak = probe.stdout.split()[-4:]
        if backend == "cpu" and not args.allow_cpu:
            print("gpu-check: error: jax sees no accelerator (backend cpu); run `make install-gpu` "
                  "on a GPU machine, or pass --allow-cpu", file=sys.stderr)
            return 2
        rows = [{"check": "accelerator", "ok": True, "wall_s": 0.0,
                 "result": f"{n_dev} x {kind} ({backend}), bf16 peak {peak} FLOP/s"}]
        rows += [run_check(name, cmd, env) for name, cmd in checks]
    table = "\n".join(["| check | result | wall s |", "|---|---|---|"] + [
        f"| {r['check']} | {r['result']} | {r['wall_s']:.0f} |" for r in rows])
    print(table)
    if not args.no_write:
        from importlib.metadata import version

        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## GPU check ({when})\n\n`make gpu-check` (bench/gpu_check.py) on "
                    f"{n_dev} x {kind}, {platform.processor() or platform.machine()}; jax "
                    f"{version('jax')}, Python {platform.python_version()}. The throughput "
                    "section just above has the 124M/350M numbers in detail.\n\n" + table + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
