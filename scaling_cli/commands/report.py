"""Figures, a Markdown report and a self-contained HTML report for a runs directory or CSV.

Reads the saved fit (`scaling fit` writes it; if it is missing the fit runs once and is
saved). Writes DIR/figures/*.png, DIR/report.md and DIR/report.html; DIR defaults to
<RUNS_DIR>/report, or <stem>_report beside a CSV.
"""

from __future__ import annotations

from analysis.report import build_report
from scaling.errors import UserError
from scaling.fileio import to_json
from scaling_cli.commands.recommend import APPROACH_ALIASES, positive_float


def add_arguments(parser) -> None:
    parser.add_argument("src", metavar="RUNS_DIR|CSV", help="a runs directory or a CSV of runs")
    parser.add_argument("--fit", metavar="FIT.json",
                        help="the fit to report (default: the saved one beside SRC); computed "
                        "and saved there if missing")
    parser.add_argument("-o", "--out", metavar="DIR", help="output directory")
    parser.add_argument("--budget", type=positive_float, metavar="C",
                        help="budget to recommend for (default: 10x the largest in the data)")
    parser.add_argument("--approach", default="3", choices=sorted(APPROACH_ALIASES),
                        help="frontier for the recommendation (default 3)")
    parser.add_argument("--json", action="store_true", help="print the written paths as JSON")


def run(args) -> int:
    if args.budget is not None and args.budget <= 0:
        raise UserError(f"--budget: expected a positive number of FLOPs, got {args.budget}")
    paths = build_report(args.src, fit_path=args.fit, out_dir=args.out, budget=args.budget,
                         approach=APPROACH_ALIASES[args.approach])
    if args.json:
        print(to_json({"out_dir": str(paths.out_dir), "markdown": str(paths.markdown),
                       "html": str(paths.html), "fit": str(paths.fit),
                       "figures": [str(p) for p in paths.figures]}))
    else:
        print(f"report: {paths.html}")
        print(f"        {paths.markdown}")
        print(f"figures: {len(paths.figures)} in {paths.out_dir / 'figures'}")
    return 0
