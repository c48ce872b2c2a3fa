"""Causal attention on CPU: XLA's kernel vs the model's chunked kernel vs PyTorch's SDPA.

Forward + backward time of causal multi-head attention (float32, B x L = 4096 tokens) for
the shapes of the suite's small models, side by side in one run:
- "xla":        jax.nn.dot_product_attention(implementation="xla");
- "chunked/N":  scaling.model.chunked_causal_attention with N query blocks (8 is the default);
- "torch sdpa": torch.nn.functional.scaled_dot_product_attention, if /tmp/torchvenv/bin/python
  (or $TORCH_PYTHON) has torch; it runs in that interpreter as a subprocess.
Prints a table and appends it to BENCHMARKS.md. Usage:
    .venv/bin/python bench/attention_kernels.py [--seconds 1.5] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import jax

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scaling.host_env import reexec_tuned  # noqa: E402

reexec_tuned()

from train_throughput import machine, torch_python  # noqa: E402

from scaling.model import CHUNKED_BLOCKS, chunked_causal_attention  # noqa: E402

TOKENS = 4096
SHAPES = [(128, 4, 16), (256, 4, 16), (256, 4, 32), (256, 5, 64), (1024, 8, 64)]  # L, H, K
BLOCKS = (4, 8, 16)

TORCH_SCRIPT = r"""
import json, sys, time, torch, torch.nn.functional as F
b, L, H, K, seconds = json.loads(sys.argv[1])
q, k, v = (torch.randn(b, H, L, K, requires_grad=True) for _ in range(3))
g = torch.randn(b, H, L, K)
def step():
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)
step(); step()
n, t0 = 0, time.perf_counter()
while n < 3 or time.perf_counter() - t0 < seconds:
    step(); n += 1
print(json.dumps({"ms": (time.perf_counter() - t0) / n * 1e3, "torch": torch.__version__}))
"""


def time_ms(fn, *args, seconds: float) -> float:
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        out = fn(*args)
        n += 1
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n * 1e3


def torch_ms(python: str, b: int, seq: int, h: int, k: int, seconds: float) -> tuple[float, str]:
    out = subprocess.run([python, "-c", TORCH_SCRIPT, json.dumps([b, seq, h, k, seconds])],
                         capture_output=True, text=True, timeout=600, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return info["ms"], info["torch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per cell")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    tpy = torch_python()
    names = ["xla", *(f"chunked/{n}" for n in BLOCKS)] + (["torch sdpa"] if tpy else [])
    lines = ["| L | heads x head_dim | batch | " + " | ".join(f"{n} ms" for n in names)
             + " | xla / chunked/8 | chunked/8 / torch |", "|" + "---|" * (len(names) + 5)]
    torch_version = None
    for seq, h, k in SHAPES:
        b = TOKENS // seq
        keys = jax.random.split(jax.random.key(0), 4)
        q, kk, v, g = (jax.random.normal(key, (b, seq, h, k)) for key in keys)
        kernels = {"xla": partial(jax.nn.dot_product_attention, is_causal=True,
                                  implementation="xla")}
        kernels |= {f"chunked/{n}": partial(chunked_causal_attention, n_blocks=n) for n in BLOCKS}
        ms = {}
        for name, kernel in kernels.items():
            fwd_bwd = jax.jit(lambda q, k, v, g, kernel=kernel: jax.vjp(kernel, q, k, v)[1](g))
            ms[name] = time_ms(fwd_bwd, q, kk, v, g, seconds=args.seconds)
        if tpy:
            ms["torch sdpa"], torch_version = torch_ms(tpy, b, seq, h, k, args.seconds)
        default = ms[f"chunked/{CHUNKED_BLOCKS}"]
        vs_torch = f"{default / ms['torch sdpa']:.2f}x" if tpy else "n/a"
        lines.append(f"| {seq} | {h} x {k} | {b} | " + " | ".join(f"{ms[n]:.2f}" for n in names)
                     + f" | {ms['xla'] / default:.2f}x | {vs_torch} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"\n## Causal attention kernels on CPU ({when})\n\n`bench/attention_kernels.py`: "
            f"forward + backward of float32 causal attention, {TOKENS} tokens per call, mean time "
            f"over at least {args.seconds} s per cell. Machine: {machine()}. jax {jax.__version__}, "
            f"torch {torch_version or 'not installed'}. Lower is better; the model uses "
            f"chunked/{CHUNKED_BLOCKS} on CPU. Load average before the run: "
            f"{load_before:.2f}.\n\n{table}\n")
    with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write(text)
    print(f"appended to {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
