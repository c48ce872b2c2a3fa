"""Rolling-origin validation of Approach 3 on Marin's three public IsoFLOP ladders.

For each ladder (data/reference/marin_{dclm,comma,nemotron}.csv, grouped by `budget`): fit on
budgets 1..k, predict budget k+1 (analysis.rollout), and print per step the error of the
predicted minimum loss, ln(N* predicted / observed), the mean absolute relative error over
the budget's runs and the share of them inside the 80% prediction interval, twice: with the
PI of noise and law spread only (before the extrapolation term: misspecification=False) and
with the extrapolation error measured on each step's own training runs
(analysis.extrapolation). Appends the table
to BENCHMARKS.md (these are accuracy numbers, not timings: the machine's load does not move
them).

    .venv/bin/python bench/rollout_ladders.py [--bootstrap 200] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.rollout import rollout  # noqa: E402

LADDERS = ("dclm", "comma", "nemotron")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    lines = ["| ladder | fitted budgets | predicted budget | loss* error | ln(N* pred/obs) | "
             "runs: mean abs rel error | runs in 80% PI, before | loss* in PI, before | "
             "tau | runs in 80% PI, with tau | loss* in PI, with tau |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in LADDERS:
        pts = pd.read_csv(ROOT / "data" / "reference" / f"marin_{name}.csv")
        pts["run"] = [f"row{i + 1}" for i in range(len(pts))]
        before = rollout(pts, n_bootstrap=args.bootstrap, level=0.8, misspecification=False)
        roll = rollout(pts, n_bootstrap=args.bootstrap, level=0.8)
        for b, s in zip(before.steps, roll.steps, strict=True):
            lines.append(f"| {name} | {s.train[0]:.2g}..{s.train[-1]:.2g} ({len(s.train)}) | "
                         f"{s.target:.2g} | {s.loss_opt_error:+.2%} | "
                         f"{s.params_opt_log_error:+.3f} | "
                         f"{s.points_loss_mean_abs_rel_error:.2%} | "
                         f"{b.points_pi_coverage:.0%} | {'yes' if b.loss_opt_inside else 'no'} | "
                         f"{s.tau:.3f} | {s.points_pi_coverage:.0%} | "
                         f"{'yes' if s.loss_opt_inside else 'no'} |")
        m, mb = roll.summary(), before.summary()
        lines.append(f"| {name} | mean | | {m['loss_opt_mean_abs_error']:.2%} (abs) | "
                     f"{m['params_opt_mean_abs_log_error']:.3f} (abs) | "
                     f"{m['points_loss_mean_abs_rel_error']:.2%} | "
                     f"{mb['points_pi_coverage']:.0%} | {mb['loss_opt_inside']} | | "
                     f"{m['points_pi_coverage']:.0%} | {m['loss_opt_inside']} |")
        print("\n".join(lines[-len(roll.steps) - 1:]), flush=True)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## Rolling-origin validation on Marin's ladders (bench/rollout_ladders.py), "
                    f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n\n"
                    f"Approach 3 (summed Huber, 4,500 starts) fitted on budgets 1..k, predicting "
                    f"budget k+1; loss* is the held-out budget's IsoFLOP minimum (parabola "
                    f"vertex); PI before: {args.bootstrap} bootstrap fits of the training "
                    f"runs plus their residual scatter (no replicates in these ladders); with "
                    f"tau: plus the extrapolation error tau x ln-distance beyond the fitted "
                    f"range, tau measured by an inner rollout on the step's own training runs "
                    f"(analysis.extrapolation; Student-t on the inner origins). Errors are "
                    f"predicted/observed - 1.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
