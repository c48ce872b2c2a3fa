"""Replica groups vs separate runs: aggregate training tokens/s at the demo's sizes.

For models of ~5K-250K parameters at the demo's shape (byte vocabulary, seq 128, batch 4,
SwiGLU, tied embeddings, AdamW with clipping) this measures side by side in one process:

- "separate": scaling.train_step's jitted step of one run (what `scaling train` dispatches),
  with the steps per dispatch the trainer picks under the demo's log_every = 25. k separate
  runs trained one after another on these cores add up to this same aggregate rate (two
  worker slots on two cores give each run half the cores, which is no faster for models
  this small);
- "group of k": scaling.replicas' vmapped step over k replicas (different seeds and learning
  rates), the same steps per dispatch; aggregate tokens/s counts every replica's tokens.

Tokens/s are steady state (compile excluded), the best of `--rounds` rounds. It prints a
table and appends it to BENCHMARKS.md with the machine, versions, date and load average.
Usage: .venv/bin/python bench/replica_throughput.py [--sizes 5K,25K,100K,250K]
       [--replicas 1,4,8,16] [--seconds 1.5] [--rounds 2] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_throughput import Timed, machine  # noqa: E402  (re-executes with the tuned env)

from scaling import dispatch  # noqa: E402
from scaling import mesh as mesh_lib  # noqa: E402
from scaling.config import OptimConfig, RunConfig, ScheduleConfig  # noqa: E402
from scaling.flops import flops_all, param_counts  # noqa: E402
from scaling.replica_groups import OPTIM_SCALARS  # noqa: E402
from scaling.replicas import make_group_step_fn, stack_trees  # noqa: E402
from scaling.shapes import ModelConfig  # noqa: E402
from scaling.train_step import TrainState, make_step_fn  # noqa: E402

SIZES = {  # name -> (n_layers, d_model, n_heads, head_dim, d_ff); vocabulary 256
    "5K": (1, 16, 2, 8, 48),
    "25K": (2, 32, 2, 16, 64),
    "100K": (2, 64, 4, 16, 160),
    "250K": (3, 80, 4, 20, 256),
}
SEQ, BATCH, LOG_EVERY, CHECKPOINT_EVERY = 128, 4, 25, 200  # examples/demo.toml


def run_config(size: str, seed: int = 0, lr: float = 1e-2) -> RunConfig:
    n_layers, d, h, k, f = SIZES[size]
    model = ModelConfig(vocab_size=256, seq_len=SEQ, n_layers=n_layers, d_model=d, n_heads=h,
                        head_dim=k, d_ff=f)
    return RunConfig(model=model, optim=OptimConfig(lr=lr), schedule=ScheduleConfig(kind="cosine"),
                     batch_size=BATCH, n_steps=10**6, seed=seed, log_every=LOG_EVERY,
                     checkpoint_every=CHECKPOINT_EVERY)


def steps_per_dispatch(cfg: RunConfig) -> int:
    fpt = flops_all(cfg.model)["6N"]
    k = dispatch.auto_steps_per_dispatch(fpt * cfg.batch_size * SEQ, jax.default_backend())
    return dispatch.aligned_steps_per_dispatch(k, (cfg.log_every, cfg.checkpoint_every))


def batches(n_replicas: int | None, k: int, seed: int = 0) -> np.ndarray:
    shape = (k, 1, BATCH, SEQ + 1) if n_replicas is None else (n_replicas, k, 1, BATCH, SEQ + 1)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.int32)


def bench_separate(size: str) -> Timed:
    cfg = run_config(size)
    k = steps_per_dispatch(cfg)
    ts = TrainState(cfg, mesh_lib.make_mesh())
    step_fn, state = make_step_fn(ts), ts.init()
    holder = {"p": state["params"], "o": state["opt_state"]}
    data, step0 = jax.device_put(batches(None, k)), np.asarray(0, np.int32)

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, data)
        return ce

    return Timed(call, k * BATCH * SEQ, k)


def bench_group(size: str, n_replicas: int) -> Timed:
    cfgs = [run_config(size, seed=i, lr=1e-2 * (1 + i / n_replicas)) for i in range(n_replicas)]
    k = steps_per_dispatch(cfgs[0])
    mesh = mesh_lib.make_mesh()
    states = [TrainState(c, mesh).init() for c in cfgs]
    ts = TrainState(cfgs[0], mesh)
    step_fn = make_group_step_fn(ts)
    stacked = stack_trees(states)
    hparams = {n: np.asarray([getattr(c.optim, n) for c in cfgs], np.float32) for n in OPTIM_SCALARS}
    holder = {"p": stacked["params"], "o": stacked["opt_state"]}
    data, step0 = jax.device_put(batches(n_replicas, k)), np.asarray(0, np.int32)

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, data, hparams)
        return ce

    return Timed(call, n_replicas * k * BATCH * SEQ, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--replicas", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=1.5, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    ks = [int(k) for k in args.replicas.split(",") if k]
    load_before = os.getloadavg()[0]
    rows = []
    for size in sizes:
        cfg = run_config(size)
        n_params = param_counts(cfg.model)["total"]
        timers = {"separate": bench_separate(size)}
        timers.update({k: bench_group(size, k) for k in ks})
        rates: dict = {name: [] for name in timers}
        for _ in range(args.rounds):  # interleaved, so load changes hit every variant alike
            for name, timer in timers.items():
                rates[name].append(timer.measure(args.seconds))
        separate = max(rates["separate"])
        for k in ks:
            group = max(rates[k])
            rows.append((size, n_params, k, timers[k].k, separate, group, group / separate,
                         timers[k].compile_s))
            print(f"{size} N={n_params:,} k={k}: separate {separate:,.0f} tok/s, group "
                  f"{group:,.0f} tok/s ({group / separate:.2f}x)", flush=True)
    load_after = os.getloadavg()[0]
    header = ("| size | N | replicas k | steps/dispatch | k separate runs, aggregate tok/s | "
              "group of k, aggregate tok/s | group / separate | group compile s |")
    lines = [header, "|" + "---|" * 8]
    for size, n, k, spd, sep, grp, ratio, comp in rows:
        lines.append(f"| {size} | {n:,} | {k} | {spd} | {sep:,.0f} | {grp:,.0f} | {ratio:.2f}x | "
                     f"{comp:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    import flax
    import optax

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = [
        f"\n## Replica groups vs separate runs ({when})\n",
        f"`bench/replica_throughput.py`: the demo's shape (byte vocabulary, seq {SEQ}, batch "
        f"{BATCH}, SwiGLU, tied embeddings, AdamW with clipping, float32), steps per dispatch as "
        f"the trainer picks them under log_every = {LOG_EVERY}. 'k separate runs' is one run's "
        "step (scaling.train_step), which k runs trained one after another add up to; 'group "
        "of k' is scaling.replicas' vmapped step over k replicas (own seeds and learning "
        "rates), counting every replica's tokens. Steady state, best of "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s. Machine: {machine()}. "
        f"Versions: jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
        f"Python {platform.python_version()}. Load average (1 min) {load_before:.2f} before, "
        f"{load_after:.2f} after the run.\n",
        table + "\n",
    ]
    with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write("\n".join(section))
    print(f"appended to {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
