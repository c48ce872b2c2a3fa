"""Compare ladders: effective compute multiplier with intervals, crossover, wall-clock.

Each SRC is a runs directory or a CSV; a labelled one (a `label` column, --label-column, or
sweep specs with `label`) gives one ladder per label, so one CSV with labels is enough. For
every pair (A, B) in order: at every swept budget and at --target-flops, the multiplier
(the compute A needs to reach B's compute-optimal loss at C, over C; above 1, B is better)
with a bootstrap interval; the compute where the two frontiers cross, if they do within
--crossover-range; and, where the runs measured tokens/s, the wall-clock multiplier.
"""

from __future__ import annotations

import argparse
import math

from analysis.bootstrap import DEFAULT_LEVEL, check_level
from analysis.compare import compare_all
from analysis.compare_report import crossover_text, pair_rows, write_compare_report
from analysis.labels import contenders
from scaling.compile_cache import enable_compile_cache
from scaling.errors import UserError
from scaling.fileio import to_json
from sweeps.spec import check_number

DEFAULT_BOOTSTRAP = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", nargs="+",
                        help="runs directories or CSVs (or one CSV with labels)")
    parser.add_argument("--label-column", default=None, metavar="NAME",
                        help="the CSV column that labels the points (default: `label` if any)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                        help=f"bootstrap resamples per ladder (default {DEFAULT_BOOTSTRAP}; "
                             "0: no intervals)")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                        help=f"interval level (default {DEFAULT_LEVEL})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--target-flops", default=None, metavar="C",
                        help="also compare at this budget (e.g. 1e22)")
    parser.add_argument("--crossover-range", nargs=2, default=None, metavar=("LO", "HI"),
                        help="FLOPs searched for a crossover (default: smallest budget / 100 "
                             "to largest x 1e4)")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="write compare.md, compare.html and one figure per pair to DIR")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 0 or args.bootstrap == 1:
        raise UserError(f"--bootstrap: expected 0 or at least 2 resamples, got {args.bootstrap}")
    level = check_level(args.level)
    target = (None if args.target_flops is None
              else float(check_number(args.target_flops, "--target-flops", lo=0, lo_open=True)))
    cross = None
    if args.crossover_range is not None:
        cross = tuple(float(check_number(v, "--crossover-range", lo=0, lo_open=True))
                      for v in args.crossover_range)
    enable_compile_cache()
    sides = contenders(args.src, label_column=args.label_column, n_bootstrap=args.bootstrap,
                       seed=args.seed, level=level)
    pairs = compare_all(sides, target_flops=target, level=level, crossover_range=cross)
    report = write_compare_report(args.report, pairs, sides) if args.report else None
    if args.json:
        print(to_json({"level": level, "n_bootstrap": args.bootstrap,
                       "ladders": {c.name: c.to_dict() for c in sides},
                       "pairs": [p.to_dict() for p in pairs]}))
        return 0
    for pair in pairs:
        print(f"A = {pair.a}, B = {pair.b}  (multiplier: compute A needs to reach B's loss "
              f"at C, / C; {level:.0%} bootstrap intervals, {pair.n_samples} pairs)")
        header = ["budget C", "L*_A", "L*_B", "multiplier [CI]", "wall-clock [CI]"]
        rows = pair_rows(pair)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  " + "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)))
        print("  " + crossover_text(pair))
        if any(math.isinf(r.multiplier) for r in pair.budgets):
            print(f"  never: B's loss there is below {pair.a}'s irreducible loss E")
    if report:
        print(f"wrote {report}")
    return 0
