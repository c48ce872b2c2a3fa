"""Replica groups vs separate runs: aggregate training tokens/s at the demo's sizes.

At examples/demo.toml's shapes (depth ladder, aspect 8: its smallest, 1 x 8, 2.9K parameters;
~100K, 5 x 40; its largest, 7 x 56, 282K; byte vocabulary, seq 128, batch 4, SwiGLU, tied
embeddings, AdamW with clipping, float32) this measures side by side in one process:

- "separate": scaling.train_step's jitted step of one run (what `scaling train` dispatches),
  with the steps per dispatch the trainer picks under the demo's log_every = 25. k separate
  runs trained one after another add up to this same aggregate rate;
- "group of k": scaling.replicas' vmapped step over k replicas (different seeds and learning
  rates), the same steps per dispatch (the group uses its runs' own); aggregate tokens/s
  counts every replica's tokens.

Rates are steady state (compile excluded), the best of `--rounds` interleaved rounds, both in
wall-clock tokens/s and in tokens per CPU-second of this process (all its threads), which a
loaded machine disturbs much less than wall time. Start-up is the time to a first step: one
run's own initialiser and step compilation (each run of an LR sweep pays its own: the LR is a
constant of its step) against the group's one initialiser (`init_group`) and one step.
It prints a table and appends it to BENCHMARKS.md with the machine, versions, date and load.
Usage: .venv/bin/python bench/replica_throughput.py [--sizes 2.9K,105K,282K]
       [--replicas 1,4,8,16] [--seconds 1.0] [--rounds 3] [--no-write]
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

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_throughput import machine  # noqa: E402  (re-executes with the tuned env)

from scaling import dispatch, runs  # noqa: E402
from scaling import mesh as mesh_lib  # noqa: E402
from scaling.config import DataConfig, OptimConfig, RunConfig, ScheduleConfig  # noqa: E402
from scaling.data import load_tokens  # noqa: E402
from scaling.flops import flops_all, param_counts  # noqa: E402
from scaling.replica_groups import OPTIM_SCALARS  # noqa: E402
from scaling.replicas import init_group, make_group_step_fn  # noqa: E402
from scaling.shapes import make_config, shape_recipe  # noqa: E402
from scaling.train_step import TrainState, make_step_fn  # noqa: E402

RECIPE = shape_recipe("ladder", 8.0)  # examples/demo.toml's
SIZES = {"2.9K": 1, "105K": 5, "282K": 7}  # name -> depth on that ladder
SEQ, BATCH, LOG_EVERY, CHECKPOINT_EVERY = 128, 4, 25, 200  # examples/demo.toml


def run_config(size: str, seed: int = 0, lr: float = 1e-2) -> RunConfig:
    depth = SIZES[size]
    model = make_config(RECIPE.width_for_depth(depth), depth, 256, SEQ, recipe=RECIPE)
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


class Timed:
    """A compiled k-step dispatch; `measure(seconds)` -> (tokens/s, tokens per CPU-second)."""

    def __init__(self, call, tokens_per_call: int, k: int, t_begin: float) -> None:
        jax.block_until_ready(call())
        self.startup_s = time.perf_counter() - t_begin  # state, compile and a first dispatch
        jax.block_until_ready(call())  # one warm call
        self.call, self.tokens_per_call, self.k = call, tokens_per_call, k

    def measure(self, seconds: float) -> tuple[float, float]:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            out = self.call()
            n += 1
            if time.perf_counter() - t0 >= seconds:
                break
        jax.block_until_ready(out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return n * self.tokens_per_call / wall, n * self.tokens_per_call / max(cpu, 1e-9)


def bench_separate(size: str) -> Timed:
    t_begin = time.perf_counter()
    cfg = run_config(size)
    k = steps_per_dispatch(cfg)
    ts = TrainState(cfg, mesh_lib.make_mesh())
    step_fn, state = make_step_fn(ts), ts.init()
    holder = {"p": state["params"], "o": state["opt_state"]}
    data, step0 = jax.device_put(batches(None, k)), np.asarray(0, np.int32)

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, data)
        return ce

    return Timed(call, k * BATCH * SEQ, k, t_begin)


def bench_group(size: str, n_replicas: int) -> Timed:
    t_begin = time.perf_counter()
    cfgs = [run_config(size, seed=i, lr=1e-2 * (1 + i / n_replicas)) for i in range(n_replicas)]
    k = steps_per_dispatch(cfgs[0])
    ts = TrainState(cfgs[0], mesh_lib.make_mesh())
    step_fn = make_group_step_fn(ts)
    stacked = init_group(ts, [c.seed for c in cfgs])
    hparams = {n: np.asarray([getattr(c.optim, n) for c in cfgs], np.float32) for n in OPTIM_SCALARS}
    holder = {"p": stacked["params"], "o": stacked["opt_state"]}
    data, step0 = jax.device_put(batches(n_replicas, k)), np.asarray(0, np.int32)

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, data, hparams)
        return ce

    return Timed(call, n_replicas * k * BATCH * SEQ, k, t_begin)


def end_to_end(size: str, n_replicas: int, n_steps: int) -> tuple[float, float]:
    """Wall seconds of `scaling train` on k fresh runs (the demo's data, an LR x seed sweep
    of n_steps each): one process per run, one after another, against one process training
    them as a group. Each side starts from an empty compilation cache (shared by its runs,
    as in a sweep); the tokenised corpus is cached before either."""
    data = DataConfig(source="stdlib", tokenizer="bytes", eval_tokens=32768)
    load_tokens(data, seq_len=SEQ)
    cfgs = [run_config(size, seed=i, lr=1e-2 * 2 ** (i / n_replicas - 0.5)).with_(
        data=data, n_steps=n_steps) for i in range(n_replicas)]
    walls = []
    for grouped in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            dirs = [str(runs.init_run_dir(Path(tmp) / "runs", c)) for c in cfgs]
            env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(Path(tmp) / "jax-cache"),
                   "PYTHONPATH": str(REPO)}
            cmd = [sys.executable, "-m", "scaling_cli", "train", "--quiet"]
            t0 = time.perf_counter()
            for argv in ([cmd + dirs] if grouped else [cmd + [d] for d in dirs]):
                subprocess.run(argv, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
            assert all(runs.read_status(d)["state"] == "done" for d in dirs)
    return walls[0], walls[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--replicas", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="per round and variant (at least one dispatch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--end-to-end", default="", metavar="SIZE:K:STEPS,...",
                        help="also time `scaling train` on K fresh runs of STEPS steps, "
                             "separately and as one group (e.g. 2.9K:8:400)")
    parser.add_argument("--compile-cache", metavar="DIR",
                        help="persistent compilation cache for the throughput rows (their "
                             "start-up columns then time cache loads, not compilations)")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    args = parser.parse_args()
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    sizes = [s for s in args.sizes.split(",") if s]
    ks = [int(k) for k in args.replicas.split(",") if k]
    t_start, load_before = time.perf_counter(), os.getloadavg()
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
        sep_wall = max(r[0] for r in rates["separate"])
        sep_cpu = max(r[1] for r in rates["separate"])
        spread = max(r[0] for r in rates["separate"]) / min(r[0] for r in rates["separate"]) - 1
        for k in ks:
            wall, cpu = max(r[0] for r in rates[k]), max(r[1] for r in rates[k])
            rows.append((size, n_params, k, timers[k].k, sep_wall, wall, wall / sep_wall,
                         cpu / sep_cpu, timers["separate"].startup_s, timers[k].startup_s))
            print(f"{size} N={n_params:,} k={k}: separate {sep_wall:,.0f} tok/s (round spread "
                  f"{spread:.0%}), group {wall:,.0f} tok/s ({wall / sep_wall:.2f}x wall, "
                  f"{cpu / sep_cpu:.2f}x per CPU-second)", flush=True)
    e2e_rows = []
    for item in [x for x in args.end_to_end.split(",") if x]:
        size, k, n_steps = item.split(":")
        separate, grouped = end_to_end(size, int(k), int(n_steps))
        e2e_rows.append((size, int(k), int(n_steps), separate, grouped))
        print(f"{size} k={k} x {n_steps} steps end to end: separate {separate:.1f} s, group "
              f"{grouped:.1f} s ({separate / grouped:.2f}x)", flush=True)
    minutes, load_after = (time.perf_counter() - t_start) / 60, os.getloadavg()
    header = ("| size | N | replicas k | steps/dispatch | k separate runs, aggregate tok/s | "
              "group of k, aggregate tok/s | group / separate (wall) | group / separate "
              "(per CPU-second) | start-up s: one run | start-up s: group |")
    lines = [header, "|" + "---|" * 10] if rows else []
    for size, n, k, spd, sep, grp, ratio, cpu_ratio, start_one, start_group in rows:
        lines.append(f"| {size} | {n:,} | {k} | {spd} | {sep:,.0f} | {grp:,.0f} | {ratio:.2f}x | "
                     f"{cpu_ratio:.2f}x | {start_one:.1f} | {start_group:.1f} |")
    if e2e_rows:
        lines += [""] if lines else []
        lines += ["| size | runs k | steps each | k `scaling train`, one after another, s | "
                  "one `scaling train` of the group, s | separate / group |", "|" + "---|" * 6]
        for size, k, n_steps, separate, grouped in e2e_rows:
            lines.append(f"| {size} | {k} | {n_steps} | {separate:.1f} | {grouped:.1f} | "
                         f"{separate / grouped:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    import flax
    import optax

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = (f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
            f"{'/'.join(f'{x:.2f}' for x in load_after)} after ({minutes:.1f} min)")
    section = [
        f"\n## Replica groups vs separate runs ({when})\n",
        f"`bench/replica_throughput.py --sizes {','.join(sizes)} --replicas "
        f"{','.join(map(str, ks))} --seconds {args.seconds:g} --rounds {args.rounds}`: "
        f"examples/demo.toml's shapes (depth ladder, aspect 8; byte vocabulary, seq {SEQ}, "
        f"batch {BATCH}, SwiGLU, tied embeddings, AdamW with clipping, float32), steps per "
        f"dispatch as the trainer picks them under log_every = {LOG_EVERY}. 'k separate runs' "
        "is one run's step (scaling.train_step), which k runs trained one after another add up "
        "to; 'group of k' is scaling.replicas' vmapped step over k replicas (own seeds and "
        "learning rates), counting every replica's tokens. Steady state, best of "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s; 'per CPU-second' compares "
        "tokens per CPU-second of the process instead of per wall second. Start-up: state, "
        "compilation and a first dispatch (one run's own; each run of an LR sweep pays it)"
        f"{'; here from a warm compilation cache, so cache loads' if args.compile_cache else ''}. "
        f"Machine: {machine()}. Versions: jax {jax.__version__}, flax {flax.__version__}, optax "
        f"{optax.__version__}, Python {platform.python_version()}. XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '(unset)')}. {load[0].upper() + load[1:]}.\n",
        *(["End to end (second table): wall time of `scaling train` on k fresh runs of the "
           "demo's data (an LR x seed sweep), one process per run one after another against "
           "one process for the group, each side from an empty compilation cache.\n"]
          if e2e_rows else []),
        table + "\n",
    ]
    with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write("\n".join(section))
    print(f"appended to {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
