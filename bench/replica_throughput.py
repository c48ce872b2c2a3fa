"""Replica groups vs separate runs: aggregate training tokens/s at the demo's sizes.

At examples/demo.toml's shapes (depth ladder, aspect 8: depth 1-5 = 2.9K, 10K, 27K, 59K,
105K parameters; 7 x 56 = 282K; byte vocabulary, seq 128, batch 4, SwiGLU, tied embeddings,
AdamW with clipping, float32) this measures side by side:

- "separate, workers = 1": scaling.train_step's jitted step of one run on one device (what
  `scaling train` dispatches), with the steps per dispatch the trainer picks under the demo's
  log_every = 25, in this process with every core. k separate runs trained one after another
  (the local launcher's default, workers = 1) add up to this same aggregate rate;
- "separate, workers = 2": two such runs at once in two processes, each pinned to its own
  core with XLA's intra-op threading off (what the local launcher's workers = 2 sets up),
  their rates added (measured after the other variants, both processes measuring at once);
- "group of k": scaling.replicas' vmapped step over k replicas (different seeds and learning
  rates), the same steps per dispatch (the group uses its runs' own), its lanes split over
  one XLA host device per core as `scaling train` sets them up for a group (`--group-devices`
  to change); aggregate tokens/s counts every replica's tokens.

Rates are steady state (compile excluded), the best of `--rounds` rounds, both in wall-clock
tokens/s and in tokens per CPU-second of this process (all its threads), which a loaded
machine disturbs much less than wall time. `--end-to-end SIZE:K:STEPS` adds the wall time of
the local launcher on K fresh runs (process starts, data loads and compilations included), a
separate table: it is not the steady-state ratio. `--batch-scaling 4,8,16,32` adds one
separate run's tokens/s at other batch sizes: where a k times larger batch trains little
more tokens/s, a group of k, whose ops are as much larger, is not expected to either.
It prints a table and appends it to BENCHMARKS.md with the machine, versions, date and load.
Usage: .venv/bin/python bench/replica_throughput.py [--sizes 2.9K,10K,27K,105K]
       [--replicas 1,4,8,16] [--seconds 1.0] [--rounds 3] [--end-to-end 2.9K:8:3400]
       [--batch-scaling 4,8,16,32]
       [--no-write]
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
from scaling.replicas import (  # noqa: E402
    group_scalars,
    init_group,
    lane_sharding,
    make_group_step_fn,
    n_lanes,
    pad_lanes,
    usable_cores,
)
from scaling.shapes import make_config, shape_recipe  # noqa: E402
from scaling.train_step import TrainState, make_step_fn  # noqa: E402

RECIPE = shape_recipe("ladder", 8.0)  # examples/demo.toml's
SIZES = {"2.9K": 1, "10K": 2, "27K": 3, "59K": 4, "105K": 5, "282K": 7}  # -> depth
SEQ, BATCH, LOG_EVERY, CHECKPOINT_EVERY = 128, 4, 25, 1000  # examples/demo.toml


def run_config(size: str, seed: int = 0, lr: float = 1e-2, batch: int = BATCH) -> RunConfig:
    depth = SIZES[size]
    model = make_config(RECIPE.width_for_depth(depth), depth, 256, SEQ, recipe=RECIPE)
    return RunConfig(model=model, optim=OptimConfig(lr=lr), schedule=ScheduleConfig(kind="cosine"),
                     batch_size=batch, n_steps=10**6, seed=seed, log_every=LOG_EVERY,
                     checkpoint_every=CHECKPOINT_EVERY)


def steps_per_dispatch(cfg: RunConfig) -> int:
    fpt = flops_all(cfg.model)["6N"]
    k = dispatch.auto_steps_per_dispatch(fpt * cfg.batch_size * SEQ, jax.default_backend())
    return dispatch.aligned_steps_per_dispatch(k, (cfg.log_every, cfg.checkpoint_every))


def batches(n_replicas: int | None, k: int, seed: int = 0, batch: int = BATCH) -> np.ndarray:
    shape = (k, 1, batch, SEQ + 1) if n_replicas is None else (n_replicas, k, 1, batch, SEQ + 1)
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


def interleaved(timers: dict, rounds: int, seconds: float) -> dict:
    """{name: [(tokens/s, tokens per CPU-second) per round]}, the timers measured in turn in
    every round, so load changes hit every variant alike."""
    rates: dict = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            rates[name].append(timer.measure(seconds))
    return rates


def bench_separate(size: str, batch: int = BATCH) -> Timed:
    t_begin = time.perf_counter()
    cfg = run_config(size, batch=batch)
    k = steps_per_dispatch(cfg)
    ts = TrainState(cfg, mesh_lib.make_mesh(1, jax.devices()[:1]))  # a run alone: one device
    step_fn, state = make_step_fn(ts), ts.init()
    holder = {"p": state["params"], "o": state["opt_state"]}
    data = jax.device_put(batches(None, k, batch=batch))
    step0, step1, scalars = np.asarray(0, np.int32), np.asarray(k, np.int32), ts.scalars()

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, step1, data,
                                                   scalars)
        return ce

    return Timed(call, k * batch * SEQ, k, t_begin)


def bench_group(size: str, n_replicas: int) -> Timed:
    t_begin = time.perf_counter()
    cfgs = [run_config(size, seed=i, lr=1e-2 * (1 + i / n_replicas)) for i in range(n_replicas)]
    k = steps_per_dispatch(cfgs[0])
    devices = jax.devices()
    lanes = n_lanes(n_replicas, len(devices))
    ts = TrainState(cfgs[0], mesh_lib.make_mesh(1, devices[:1]))
    step_fn = make_group_step_fn(ts, devices=devices)
    sharding = lane_sharding(devices)
    stacked = jax.device_put(init_group(ts, pad_lanes([c.seed for c in cfgs], lanes)), sharding)
    scalars = jax.device_put(group_scalars(cfgs, lanes), sharding)
    holder = {"p": stacked["params"], "o": stacked["opt_state"]}
    data = jax.device_put(batches(lanes, k), sharding)
    step0, step1 = np.asarray(0, np.int32), np.asarray(k, np.int32)

    def call():
        holder["p"], holder["o"], ce, *_ = step_fn(holder["p"], holder["o"], step0, step1, data,
                                                   scalars)
        return ce

    return Timed(call, n_replicas * k * BATCH * SEQ, k, t_begin)


def end_to_end(size: str, n_replicas: int, n_steps: int) -> dict[str, float]:
    """Wall seconds of the local launcher (sweeps.launch.local.run_local, what `scaling
    sweep` calls) on k fresh runs of the demo's data (an LR x seed sweep of n_steps each),
    as it runs them: separately with workers = 1 (one after another) and workers = 2 (two at
    a time, one core each), and grouped with workers = 1 (one process for the group). Each
    starts from an empty compilation cache (shared by its runs, as in a sweep); the
    tokenised corpus is cached before any."""
    from sweeps.launch.local import run_local

    data = DataConfig(source="stdlib", tokenizer="bytes", eval_tokens=32768)
    load_tokens(data, seq_len=SEQ)
    cfgs = [run_config(size, seed=i, lr=1e-2 * 2 ** (i / n_replicas - 0.5)).with_(
        data=data, n_steps=n_steps) for i in range(n_replicas)]
    walls = {}
    for name, workers, grouped in (("separate, workers = 1", 1, False),
                                   ("separate, workers = 2", 2, False), ("group", 1, True)):
        with tempfile.TemporaryDirectory() as tmp:
            dirs = [runs.init_run_dir(Path(tmp) / "runs", c) for c in cfgs]
            old = {k: os.environ.get(k) for k in ("JAX_COMPILATION_CACHE_DIR", "PYTHONPATH")}
            os.environ.update({"JAX_COMPILATION_CACHE_DIR": str(Path(tmp) / "jax-cache"),
                               "PYTHONPATH": str(REPO)})
            try:
                t0 = time.perf_counter()
                progress = run_local(dirs, workers=workers, group_replicas=grouped)
                walls[name] = time.perf_counter() - t0
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            assert all(progress.states[d] == "done" for d in dirs), progress.states
    return walls


def batch_scaling(size: str, batch_sizes: list[int], args) -> list[tuple]:
    """(size, batch, best tokens/s, ratio to the first batch size, round spread) of one
    separate run at each batch size, rounds interleaved."""
    if not batch_sizes:
        return []
    timers = {b: bench_separate(size, b) for b in batch_sizes}
    walls = {b: [wall for wall, _ in r] for b, r in interleaved(timers, args.rounds,
                                                                 args.seconds).items()}
    base = max(walls[batch_sizes[0]])
    rows = [(size, b, max(r), max(r) / base, max(r) / min(r) - 1) for b, r in walls.items()]
    for row in rows:
        print(f"{size} batch {row[1]}: separate {row[2]:,.0f} tok/s ({row[3]:.2f}x batch "
              f"{batch_sizes[0]}, round spread {row[4]:.0%})", flush=True)
    return rows


def solo_worker(size: str, seconds: float, rounds: int) -> None:
    """Child mode for "separate, workers = 2": compile, say ready, wait for the go line on
    stdin, measure, print the best round's tokens/s."""
    timer = bench_separate(size)
    print("ready", flush=True)
    sys.stdin.readline()
    print(max(timer.measure(seconds)[0] for _ in range(rounds)), flush=True)


def separate_two_workers(size: str, seconds: float, rounds: int) -> float:
    """Aggregate tokens/s of two separate runs at once, each pinned to its own core with
    XLA's intra-op threading off (sweeps.launch.local's workers = 2 environment)."""
    cores = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                                      + " --xla_cpu_multi_thread_eigen=false").strip(),
           "OMP_NUM_THREADS": "1"}
    procs = []
    for i in range(2):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--solo-worker", size, "--seconds", str(seconds),
             "--rounds", str(rounds)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        os.sched_setaffinity(proc.pid, [cores[i % len(cores)]])  # as the launcher pins a slot
        procs.append(proc)
    for proc in procs:
        while proc.stdout.readline().strip() != "ready":
            if proc.poll() is not None:
                raise RuntimeError("a separate-run worker died")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    rates = [float(proc.communicate()[0].split()[-1]) for proc in procs]
    return sum(rates)


def tables(rows: list[dict], e2e_rows: list[tuple], batch_rows: list[tuple],
           batch_sizes: list[int]) -> str:
    """The markdown tables of the three measurements (those that ran)."""
    header = ("| size | N | replicas k | k separate runs, workers = 1, aggregate tok/s | "
              "k separate runs, workers = 2, aggregate tok/s | group of k, aggregate tok/s | "
              "group / separate, workers = 1 | group / separate, workers = 2 | group / separate "
              "per CPU-second | separate runs' round spread |")
    lines = [header, "|" + "---|" * 10] if rows else []
    for r in rows:
        lines.append(f"| {r['size']} | {r['n']:,} | {r['k']} | {r['sep']:,.0f} | {r['sep2']:,.0f} | "
                     f"{r['grp']:,.0f} | **{r['grp'] / r['sep']:.2f}x** | {r['grp'] / r['sep2']:.2f}x | "
                     f"{r['grp_cpu'] / r['sep_cpu']:.2f}x | {r['spread']:.0%} |")
    if e2e_rows:
        lines += [""] if lines else []
        lines += ["| size | runs k | steps each | separate, workers = 1, s | separate, workers = 2, "
                  "s | one group, workers = 1, s | separate (w = 1) / group | separate (w = 2) / "
                  "group |", "|" + "---|" * 8]
        for size, k, n_steps, w in e2e_rows:
            a, b, g = w["separate, workers = 1"], w["separate, workers = 2"], w["group"]
            lines.append(f"| {size} | {k} | {n_steps} | {a:.1f} | {b:.1f} | {g:.1f} | "
                         f"{a / g:.2f}x | {b / g:.2f}x |")
    if batch_rows:
        lines += [""] if lines else []
        lines += [f"| size | batch | separate run, workers = 1, tok/s | vs batch {batch_sizes[0]} | "
                  "round spread |", "|" + "---|" * 5]
        for size, batch, rate, ratio, spread in batch_rows:
            lines.append(f"| {size} | {batch} | {rate:,.0f} | {ratio:.2f}x | {spread:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2.9K,10K,27K,105K")
    parser.add_argument("--replicas", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="per round and variant (at least one dispatch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--group-devices", type=int, default=usable_cores(), metavar="N",
                        help="XLA host devices the group's lanes are split over (default: "
                             "one per usable core, as `scaling train` sets up for a group)")
    parser.add_argument("--end-to-end", default="", metavar="SIZE:K:STEPS,...",
                        help="also time the local launcher on K fresh runs of STEPS steps, "
                             "separately and as one group (e.g. 2.9K:8:400)")
    parser.add_argument("--batch-scaling", default="", metavar="B,...",
                        help="also time one separate run (workers = 1) at these batch sizes "
                             "(e.g. 4,8,16,32): flat tokens/s means a bigger step, grouped "
                             "or not, has no per-dispatch cost left to amortize")
    parser.add_argument("--compile-cache", metavar="DIR",
                        help="persistent compilation cache for the throughput rows (their "
                             "start-up columns then time cache loads, not compilations)")
    parser.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    parser.add_argument("--solo-worker", metavar="SIZE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.solo_worker:
        return solo_worker(args.solo_worker, args.seconds, args.rounds)
    jax.config.update("jax_num_cpu_devices", args.group_devices)
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    sizes = [s for s in args.sizes.split(",") if s]
    ks = [int(k) for k in args.replicas.split(",") if k]
    t_start, load_before = time.perf_counter(), os.getloadavg()
    rows = []
    for size in sizes if ks else []:  # --replicas '': batch scaling or end to end only
        cfg = run_config(size)
        n_params = param_counts(cfg.model)["total"]
        timers = {"separate": bench_separate(size)}
        timers.update({k: bench_group(size, k) for k in ks})
        rates = interleaved(timers, args.rounds, args.seconds)
        del timers  # free the groups' states before the two workers start
        sep_two = separate_two_workers(size, args.seconds, args.rounds)
        sep_wall = max(r[0] for r in rates["separate"])
        sep_cpu = max(r[1] for r in rates["separate"])
        spread = max(r[0] for r in rates["separate"]) / min(r[0] for r in rates["separate"]) - 1
        for k in ks:
            wall, cpu = max(r[0] for r in rates[k]), max(r[1] for r in rates[k])
            rows.append(dict(size=size, n=n_params, k=k, sep=sep_wall, sep_cpu=sep_cpu,
                             sep2=sep_two, grp=wall, grp_cpu=cpu, spread=spread))
            print(f"{size} N={n_params:,} k={k}: separate {sep_wall:,.0f} tok/s (workers=1, "
                  f"round spread {spread:.0%}), {sep_two:,.0f} (workers=2); group {wall:,.0f} "
                  f"tok/s: {wall / sep_wall:.2f}x workers=1, {wall / sep_two:.2f}x workers=2, "
                  f"{cpu / sep_cpu:.2f}x per CPU-second", flush=True)
    batch_sizes = [int(b) for b in args.batch_scaling.split(",") if b]
    batch_rows = [row for size in sizes for row in batch_scaling(size, batch_sizes, args)]
    e2e_rows = []
    for item in [x for x in args.end_to_end.split(",") if x]:
        size, k, n_steps = item.split(":")
        walls = end_to_end(size, int(k), int(n_steps))
        e2e_rows.append((size, int(k), int(n_steps), walls))
        print(f"{size} k={k} x {n_steps} steps end to end: "
              + ", ".join(f"{n} {w:.1f} s" for n, w in walls.items()), flush=True)
    minutes, load_after = (time.perf_counter() - t_start) / 60, os.getloadavg()
    table = tables(rows, e2e_rows, batch_rows, batch_sizes)
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
        f"`bench/replica_throughput.py --sizes '{','.join(sizes)}' --replicas "
        f"'{','.join(map(str, ks))}' --seconds {args.seconds:g} --rounds {args.rounds}"
        f"{' --end-to-end ' + args.end_to_end if args.end_to_end else ''}"
        f"{' --batch-scaling ' + args.batch_scaling if args.batch_scaling else ''}`"
        f"{'' if rows else ' (no group rows: the steady-state description does not apply)'}: "
        f"examples/demo.toml's shapes (depth ladder, aspect 8; byte vocabulary, seq {SEQ}, "
        f"batch {BATCH}, SwiGLU, tied embeddings, AdamW with clipping, float32), steps per "
        f"dispatch as the trainer picks them under log_every = {LOG_EVERY}. Steady state "
        "(compile excluded). 'k separate runs, workers = 1' is one run's step "
        "(scaling.train_step) on one device with every core, which k runs trained one after "
        "another (the local launcher's default) add up to; 'workers = 2' is two such runs at "
        "once in two processes, one core each, intra-op threading off (the launcher's "
        "workers = 2 setting), rates added; 'group of k' is scaling.replicas' vmapped step "
        f"over k replicas (own seeds and learning rates) split over {args.group_devices} XLA "
        "host device(s) (one per core, as `scaling train` sets up a group), counting every "
        f"replica's tokens. Best of {args.rounds} rounds of {args.seconds:g} s (the workers = 1 "
        "and group variants interleaved); 'per CPU-second' compares tokens per CPU-second of "
        "the process instead of per wall second. "
        f"Machine: {machine()}. Versions: jax {jax.__version__}, flax {flax.__version__}, optax "
        f"{optax.__version__}, Python {platform.python_version()}. XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '(unset)')}. {load[0].upper() + load[1:]}.\n",
        *(["End to end (second table; NOT the steady-state ratio): wall time of the local "
           "launcher (sweeps.launch.local.run_local, as `scaling sweep` runs it) on k fresh runs "
           "of the demo's data (an LR x seed sweep), each a `scaling train` process that pays "
           "its start, data load and compilations: separately with workers = 1 and 2, and "
           "grouped (`launcher.group_replicas`, workers = 1), each side from an empty "
           "compilation cache.\n"]
          if e2e_rows else []),
        *(["Batch scaling (last table): one separate run's steady-state tokens/s (workers = 1, "
           "steps per dispatch picked for each batch as the trainer does) at other batch sizes, "
           "rounds interleaved across the batch sizes.\n"] if batch_rows else []),
        table + "\n",
    ]
    with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write("\n".join(section))
    print(f"appended to {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
