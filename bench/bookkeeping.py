"""Bookkeeping at scale: is anything but training super-linear in the number of runs?

Measures, on generated run directories written to the run-dir contract (config.json,
status.json, result.json, metrics.jsonl; losses from a known law with 0.5% noise):

- `scaling status RUNS --json` and `scaling status RUNS` (the rich table) on 1K, 3K, 10K
  finished runs, and `scaling fit RUNS --approach 2` and `--approach all` on the same;
- the local launcher (`sweeps.launch.local.run_local`, 2 worker slots) on 100, 300, 1,000
  queued trivial runs: the documented train-command hook replaced by a shell one-liner that
  writes result.json, so what is timed is the launcher, the per-run worker process and the
  lock; bare, and (100, 300) with the progress callback `scaling sweep` installs, whose
  single refresh is also timed on the 1K/3K/10K runs dirs.

Prints a table (seconds, and microseconds per run) and appends a dated section to
BENCHMARKS.md. Each subprocess is timed by wall clock, interpreter start-up included.
Usage: python bench/bookkeeping.py [--quick] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))

from reliability_helpers import (  # type: ignore[import-not-found]  # noqa: E402
    cli_env,
    study_configs,
    write_finished_run,
)

from scaling import runs  # noqa: E402

BUDGETS = tuple(float(f"{b:.3g}") for b in np.geomspace(1e9, 1e11, 10))
WIDTHS = (8, 12, 16, 20, 24, 32, 40, 48, 56, 64)
TRIVIAL_TRAIN = ["sh", "-c", 'printf \'{"eval_loss": 1.0}\\n\' > "$0/result.json"']


def generate(root: Path, n_runs: int, state: str = "done") -> Path:
    """n_runs run dirs (budgets x widths x seeds) under root/<sweep>; returns root."""
    seeds = range(-(-n_runs // (len(BUDGETS) * len(WIDTHS))))
    configs = study_configs(budgets=BUDGETS, widths=WIDTHS, seeds=seeds, sweep="bench")[:n_runs]
    rng = np.random.default_rng(0)
    for cfg in configs:
        if state == "done":
            write_finished_run(root, cfg, fast=True, noise=0.005 * rng.standard_normal())
        else:
            run_dir = runs.run_dir_for(root, cfg)
            run_dir.mkdir(parents=True)
            (run_dir / runs.CONFIG_FILE).write_text(
                json.dumps({**cfg.to_dict(), **runs.derived_config_fields(cfg)})
            )
            runs.write_status(run_dir, "pending")
    return root


def timed_cli(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "scaling_cli", *args],
        cwd=cwd,
        env=cli_env(cwd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"scaling {' '.join(args)} failed: {r.stderr[-2000:]}")
    return elapsed


def launcher_time(root: Path, n_runs: int, with_view: bool) -> tuple[float, float]:
    """(wall seconds for run_local over n_runs pending runs, seconds spent in the view)."""
    from sweeps.launch.local import run_local
    from sweeps.progress import SweepProgress

    target = root / f"launch{n_runs}{'v' if with_view else ''}"
    generate(target, n_runs, state="pending")
    dirs = runs.list_run_dirs(target)
    assert len(dirs) == n_runs
    in_view = [0.0]
    on_update = None
    if with_view:
        view = SweepProgress(quiet=True, dirs=dirs)

        def on_update(progress):
            t = time.perf_counter()
            view.update(progress)
            in_view[0] += time.perf_counter() - t

    t0 = time.perf_counter()
    progress = run_local(dirs, workers=2, train_cmd=TRIVIAL_TRAIN, on_update=on_update)
    elapsed = time.perf_counter() - t0
    assert progress.count("done") == n_runs, {
        s: progress.count(s) for s in set(progress.states.values())
    }
    shutil.rmtree(target)
    return elapsed, in_view[0]


def view_update_time(runs_root: Path) -> float:
    """Seconds of one progress refresh of `scaling sweep` (it re-reads every run's records)."""
    from sweeps.launch.local import Progress
    from sweeps.progress import SweepProgress

    dirs = runs.list_run_dirs(runs_root)
    view = SweepProgress(quiet=True, dirs=dirs)
    progress = Progress(total=len(dirs), states={d: "done" for d in dirs})
    t0 = time.perf_counter()
    view.update(progress)
    return time.perf_counter() - t0


def versions() -> str:
    import importlib.metadata as md

    names = ("numpy", "pandas", "scipy", "rich", "filelock")
    return f"Python {platform.python_version()}, " + ", ".join(
        f"{n} {md.version(n)}" for n in names
    )


def machine() -> str:
    model = ""
    try:
        model = next(
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores {model}, "
        f"load average {load:.1f} at start"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller, for a smoke test")
    ap.add_argument("--no-append", action="store_true", help="do not write BENCHMARKS.md")
    ap.add_argument(
        "--view-only",
        action="store_true",
        help="only the launcher with the sweep view, at 100 and 300 runs",
    )
    args = ap.parse_args()
    scale = 10 if args.quick else 1
    sizes = [1000 // scale, 3000 // scale, 10000 // scale]
    launch_sizes = [100 // scale, 300 // scale, 1000 // scale]
    header = machine()
    rows = []  # (what, n, seconds)
    with tempfile.TemporaryDirectory(prefix="bench-bookkeeping-") as tmp_name:
        tmp = Path(tmp_name)
        for n in sizes if not args.view_only else []:
            t0 = time.perf_counter()
            d = generate(tmp / f"runs{n}", n)
            print(f"generated {n} runs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            rel = d.name
            for what, cli in (
                ("status --json", ["status", rel, "--json"]),
                ("status (table)", ["status", rel]),
                ("fit --approach 2", ["fit", rel, "--approach", "2"]),
                ("fit --approach all", ["fit", rel]),
            ):
                seconds = timed_cli(cli, tmp)
                rows.append((what, n, seconds))
                print(f"{what:28s} {n:6d} runs {seconds:8.2f} s", file=sys.stderr)
            rows.append(("sweep view, one update", n, view_update_time(d)))
            shutil.rmtree(d)
        for with_view in (False, True) if not args.view_only else (True,):
            for n in launch_sizes[: None if not with_view else 2]:
                seconds, in_view = launcher_time(tmp, n, with_view)
                label = "launcher + sweep view" if with_view else "launcher (bare)"
                rows.append((label, n, seconds))
                if with_view:
                    rows.append(("  of which the view", n, in_view))
                print(f"{label:28s} {n:6d} runs {seconds:8.2f} s", file=sys.stderr)
    table = format_table(rows)
    print(table)
    if not args.no_append:
        append_section(table, header)
    return 0


def format_table(rows) -> str:
    by_what: dict[str, dict[int, float]] = {}
    for what, n, s in rows:
        by_what.setdefault(what, {})[n] = s
    lines = [
        "| measurement | runs | seconds | ms per run | per-run time vs smallest |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, points in by_what.items():
        smallest = min(points)
        base = points[smallest] / smallest
        for n, s in sorted(points.items()):
            lines.append(
                f"| {what} | {n:,} | {s:.2f} | {1000 * s / n:.2f} | {(s / n) / base:.2f}x |"
            )
    return "\n".join(lines)


def append_section(table: str, header: str) -> None:
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## Bookkeeping at scale (bench/bookkeeping.py), {today}\n\n"
        f"Machine: {header}. {versions()}.\n"
        "Wall seconds per command, interpreter start-up included; generated finished runs "
        "(config/status/result/metrics per the run-dir contract); launcher: 2 worker slots, "
        'trivial train command (the SCALING_TRAIN_CMD hook). "per-run time vs smallest" '
        "above 1 means growth faster than linear.\n\n" + table + "\n"
    )
    with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
