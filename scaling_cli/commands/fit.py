"""Fit Chinchilla's approaches 1, 2, 3 (and the VPNLS check) to a runs directory or a CSV.

A CSV needs columns params, tokens (or flops, then tokens = flops / 6 params) and loss;
an optional budget column groups IsoFLOP curves. Writes fit.json (default: RUNS_DIR/fit.json,
or <stem>.fit.json beside the CSV) and prints a table of all approaches side by side, or the
fit.json object with --json.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="runs directory or CSV of runs")
    parser.add_argument("--approach", default="all", choices=["1", "2", "3", "all"],
                        help="which approach to fit (default: all)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for confidence intervals (e.g. 1000)")
    parser.add_argument("--level", type=float, default=0.8, help="CI level (default 0.8)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--drop-highest", type=int, default=0, metavar="K",
                        help="drop the K highest-loss points first (Epoch drop 5)")
    parser.add_argument("--params", default="total", choices=["total", "non_embedding"],
                        help="which parameter count is N (default total)")
    parser.add_argument("--convention", default=None,
                        help="FLOP convention for a runs dir (default: each run's own)")
    parser.add_argument("--holdout", action="store_true",
                        help="also fit on all but the largest budget and predict it")
    parser.add_argument("--rollout", action="store_true",
                        help="rolling-origin validation: fit budgets 1..k, predict k+1")
    parser.add_argument("--fix-E", type=float, default=None, metavar="VALUE", dest="fix_E",
                        help="pin the irreducible loss E of the compute-frontier law")
    parser.add_argument("--exclude", action="append", default=[], metavar="RUN",
                        help="leave this run out (repeatable), e.g. a flagged outlier")
    parser.add_argument("--json", action="store_true", help="print the fit.json object")
    parser.add_argument("-o", "--output", default=None, metavar="FIT.json",
                        help="where to write fit.json")


def default_output(src: Path) -> Path:
    return src / "fit.json" if src.is_dir() else src.with_name(f"{src.stem}.fit.json")


def run(args: argparse.Namespace) -> int:
    import warnings

    from analysis import bootstrap as boot
    from analysis import fits, forecast, load
    from scaling.compile_cache import enable_compile_cache
    from scaling.errors import UserError
    from scaling.fileio import atomic_write_json, to_json

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap: expected >= 0 resamples, got {args.bootstrap}")
    if args.bootstrap:
        boot.check_level(args.level)
    src = Path(args.src)
    if args.approach in ("3", "all"):  # a fresh process then skips most of its JIT time
        enable_compile_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fits.FitWarning)
        points, info = load.load_points(src, drop_highest=args.drop_highest,
                                        convention=args.convention)
        points = fits.with_params_kind(points, args.params)
        if args.exclude:
            points = forecast.exclude(points, args.exclude)
        if args.fix_E is not None:
            forecast.check_fixed_E(args.fix_E, points["loss"])
        curves = None
        if src.is_dir() and args.approach in ("1", "all"):
            curves = load.load_curves(src)
        results = fits.fit_all(points, curves, args.approach)
        doc = fits.fit_document(points, info, results, params_kind=args.params)
        if args.bootstrap:
            boot.bootstrap(points, results, curves=curves, n=args.bootstrap, seed=args.seed,
                           level=args.level).annotate(doc)
        if args.holdout:
            doc["holdout"] = boot.holdout_largest_budget(points)
        doc.update(forecast.forecast_blocks(
            points, results, fix_E=args.fix_E, rollout=args.rollout,
            n_bootstrap=args.bootstrap or forecast.ROLLOUT_BOOTSTRAP, level=args.level,
            seed=args.seed))
        if args.exclude:
            doc["excluded_runs"] = list(args.exclude)
    for w in caught:
        if issubclass(w.category, fits.FitWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    out = Path(args.output) if args.output else default_output(src)
    atomic_write_json(out, doc)
    if args.json:
        print(to_json(doc))
    else:
        print(format_table(doc))
        print(f"wrote {out}")
    return 0


_ROWS = [("a", "a  (N* ~ C^a)"), ("b", "b  (D* ~ C^b)"), ("k_params", "k_params"),
         ("k_tokens", "k_tokens"), ("G", "G"), ("alpha", "alpha"), ("beta", "beta"),
         ("E", "E"), ("A", "A"), ("B", "B"), ("objective", "Huber objective"),
         ("n_points", "points")]


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "nan"
    return f"{x:.4g}"


def format_table(doc: dict) -> str:
    """All approaches side by side; CIs in brackets where bootstrapped."""
    cols = [k for k in ("approach1", "approach2", "approach3", "vpnls") if k in doc]
    header = ["", *cols]
    lines = []
    for key, label in _ROWS:
        cells = []
        for c in cols:
            sec = doc[c]
            if "error" in sec:
                cells.append("-")
                continue
            v = sec.get(key)
            cell = _fmt(v)
            ci = sec.get(f"{key}_ci")
            if ci and v is not None:
                cell += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
            cells.append(cell)
        if any(c != "-" for c in cells):
            lines.append([label, *cells])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in lines]
    notes = [f"{doc['source']}: {doc['n_points']} points, N = {doc['params_kind']} params, "
             f"FLOPs {doc['convention']}"]
    if doc.get("excluded"):
        notes.append("excluded: " + ", ".join(f"{v} {k}" for k, v in doc["excluded"].items()))
    for c in cols:
        if "error" in doc[c]:
            notes.append(f"{c}: {doc[c]['error']}")
    if "approach2" in doc and doc["approach2"].get("n_unbracketed"):
        notes.append(f"approach2: {doc['approach2']['n_unbracketed']} budget minima not "
                     "bracketed")
    ci_level = next((doc[c]["bootstrap"]["level"] for c in cols if "bootstrap" in doc[c]), None)
    if ci_level:
        notes.append(f"[lo, hi]: {ci_level:.0%} bootstrap percentile intervals")
    notes += forecast_notes(doc)
    if "holdout" in doc:
        h = doc["holdout"]["approach3"]
        notes.append(f"holdout (largest budget): approach3 ln(N* pred/obs) = "
                     f"{h['params_opt_log_error']:+.3f}, loss error {h['loss_opt_error']:+.4f}")
    return "\n".join(text + notes)


def forecast_notes(doc: dict) -> list[str]:
    """Noise, outliers, frontier and rollout lines under the table."""
    out = []
    noise = doc.get("noise")
    if noise:
        lo, hi = noise["sigma_ci"]
        out.append(f"noise: sigma {noise['sigma']:.3g} of log loss [{lo:.3g}, {hi:.3g}] "
                   f"from {noise['source']} ({noise['note']})")
    for o in doc.get("outliers", []):
        out.append(f"outlier: {o['run']} loss {o['loss']:.4g} vs law {o['predicted']:.4g} "
                   f"({o['z']:+.1f} sigma); leave it out with --exclude {o['run']}")
    front = doc.get("frontier")
    if front and "law" in front:
        law = front["law"]
        out.append(f"frontier: L*(C) = {law['E']:.4g} + {law['A']:.4g} C^-{law['gamma']:.4g}"
                   + (" (E fixed)" if law["fixed_E"] else ""))
    roll = doc.get("rollout")
    if roll:
        out.append(f"rollout over {roll['mode']} ({roll['level']:.0%} PI):")
        out.append("  target      n  loss* err  ln N* err  runs |err|  runs in PI")
        for st in roll["steps"]:
            out.append(f"  {st['target']:<9.3g} {st['n_target']:>3}  "
                       f"{st['loss_opt_error']:+9.2%}  {st['params_opt_log_error']:+9.3f}  "
                       f"{st['points_loss_mean_abs_rel_error']:9.2%}  "
                       f"{st['points_pi_coverage']:9.0%}")
        m = roll["summary"]
        out.append(f"  mean |loss* err| {m['loss_opt_mean_abs_error']:.2%}, mean |ln N* err| "
                   f"{m['params_opt_mean_abs_log_error']:.3f}, runs in PI "
                   f"{m['points_pi_coverage']:.0%}")
    return out
