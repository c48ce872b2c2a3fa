"""Plan and run every run of a sweep spec; resumable: run the same command again to continue.

Finished runs are skipped, interrupted ones resume from their checkpoints, and runs that
diverge or fail are reported with their reason without stopping the others. Exit 0 when
every run is done or diverged, 1 when some failed, 2 on bad input (including a runs dir
that belongs to another spec, unless --force).
"""

from __future__ import annotations

import argparse
import json
import time

from scaling.errors import RunFailed
from sweeps.progress import SweepProgress, format_duration
from sweeps.spec import check_argument, load_spec
from sweeps.status import run_row, summarize
from sweeps.sweep import run_sweep
from sweeps.tune import format_law


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="sweep spec (TOML)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR",
                        help="where run directories go (default: runs)")
    parser.add_argument("--workers", default=None, metavar="N",
                        help="parallel runs for the local launcher (default: the spec's)")
    parser.add_argument("--launcher", choices=("local", "slurm"), default=None,
                        help="where to run (default: the spec's launcher.kind)")
    parser.add_argument("--force", action="store_true",
                        help="reuse a runs dir that belongs to another spec")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    workers = None if args.workers is None else check_argument(args.workers, "launcher.workers",
                                                                "--workers")
    spec = load_spec(args.spec)
    view = SweepProgress(quiet=args.json)
    t0 = time.monotonic()
    tuned: dict = {}

    def on_tune(law, path) -> None:  # the law as soon as the [tune] block has fitted it
        tuned.update(law=str(path), name=law.name, n_exp=law.n_exp,
                     n_exp_interval=list(law.n_exp_interval), d_exp=law.d_exp,
                     d_exp_interval=list(law.d_exp_interval), b_exp=law.b_exp,
                     b_exp_interval=list(law.b_exp_interval), level=law.level,
                     batch_exp=law.batch.exp if law.batch else None,
                     batch_exp_interval=list(law.batch.exp_interval) if law.batch else None)
        if not args.json:
            view.console.print(format_law(law, path), markup=False, highlight=False, soft_wrap=True)

    try:
        outcome = run_sweep(spec, args.runs_dir, workers=workers, launcher=args.launcher,
                            force=args.force, on_update=view.update, on_plan=view.on_plan,
                            on_tune=on_tune)
    finally:
        view.stop()
    rows = [run_row(d) for d in outcome.run_dirs]
    bad = [r for r in rows if r["state"] in ("failed", "diverged")]
    states = summarize(rows)["states"]
    summary = {"sweep": spec.name, "runs_dir": args.runs_dir, "runs": len(rows),
               **{s: states.get(s, 0) for s in ("done", "diverged", "failed")},
               "flops": outcome.plan.total_flops, "wall_time_s": time.monotonic() - t0,
               "problems": [{"run": r["run"], "state": r["state"], "reason": r["reason"]}
                            for r in bad]}
    if tuned:
        summary["tune"] = tuned
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"sweep {spec.name}: {summary['done']}/{summary['runs']} done, "
              f"{summary['diverged']} diverged, {summary['failed']} failed "
              f"in {format_duration(summary['wall_time_s'])}; runs in {args.runs_dir}/{spec.name}")
        for p in summary["problems"]:
            print(f"  {p['state']}: {p['run']}: {p['reason']}")
    unfinished = [r for r in rows if r["state"] not in ("done", "diverged", "failed")]
    if summary["failed"] or unfinished:
        raise RunFailed(f"{summary['failed']} run(s) failed, {len(unfinished)} unfinished; "
                        f"see `scaling status {args.runs_dir}`")
    return 0
