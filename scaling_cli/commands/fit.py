"""Fit Chinchilla's approaches 1, 2, 3 (and the VPNLS check) to a runs directory or a CSV.

A CSV needs columns params, tokens (or flops, then tokens = flops / 6 params) and loss;
an optional budget column groups IsoFLOP curves. Writes fit.json (default: RUNS_DIR/fit.json,
or <stem>.fit.json beside the CSV) and prints a table of all approaches side by side, or the
fit.json object with --json. `--metric NAME` fits a recorded loss-like metric instead
(fit.<metric>.json); `--task NAME` fits the two-step downstream forecast that
`scaling predict --task NAME` reads (fit.downstream.NAME.json; analysis.downstream).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from analysis.approach2 import PowerLawResult
from analysis.bootstrap import DEFAULT_LEVEL
from analysis.downstream import DEFAULT_BOOTSTRAP as DEFAULT_TASK_BOOTSTRAP
from analysis.downstream import default_task_fit_path, fit_task_source, write_task_fit
from analysis.fitdoc import FitDocument, default_fit_path, write_fit
from analysis.fits import FitWarning
from analysis.forecast import fit_source_with_forecast
from analysis.joint import JOINT_MODES, JointFit
from analysis.labels import fit_labels, write_labelled
from analysis.numfmt import fmt_num
from scaling.compile_cache import enable_compile_cache
from scaling.errors import UserError
from scaling.fileio import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="runs directory or CSV of runs")
    parser.add_argument("--approach", default="all", choices=["1", "2", "3", "all"],
                        help="which approach to fit (default: all)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for confidence intervals (e.g. 1000)")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                        help=f"CI level (default {DEFAULT_LEVEL})")
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
    parser.add_argument("--overestimate-penalty", type=float, default=1.0, metavar="W",
                        dest="overestimate_penalty",
                        help="Approach 3: weight W > 1 on runs the law over-predicts, so under-tuned "
                             "runs above it pull it up less (1 = symmetric, the default)")
    parser.add_argument("--exclude", action="append", default=[], metavar="RUN",
                        help="leave this run out (repeatable), e.g. a flagged outlier")
    parser.add_argument("--metric", default="loss", metavar="NAME",
                        help="fit this recorded loss-like metric instead of the held-out loss "
                             "(e.g. eval/NAME/loss, eval/NAME/bpb, task/NAME/loss); writes "
                             "fit.<metric>.json")
    parser.add_argument("--task", default=None, metavar="NAME",
                        help="fit the two-step downstream forecast of task NAME (task loss "
                             "from N, D; accuracy from task loss) for `scaling predict --task`;"
                             f" writes fit.downstream.NAME.json ({DEFAULT_TASK_BOOTSTRAP} "
                             "resamples unless --bootstrap)")
    parser.add_argument("--label-column", default=None, metavar="NAME",
                        help="CSV column labelling the points (default: `label` if any); "
                             "2+ labels: one fit per label, fit.<label>.json + fit.labels.json")
    parser.add_argument("--joint", default=None, choices=list(JOINT_MODES),
                        help="labelled data: also fit all labels at once sharing E "
                             "(shared-E) or E, alpha and beta (shared-exponents)")
    parser.add_argument("--json", action="store_true", help="print the fit.json object")
    parser.add_argument("-o", "--output", default=None, metavar="FIT.json",
                        help="where to write fit.json")


def fit_and_write(src: str | Path, output: str | Path | None = None,
                  **options) -> tuple[FitDocument, Path]:
    """`analysis.fits.fit_source` with its FitWarnings on stderr, saved to `output`
    (default: beside the source); what `scaling fit` and the demo run."""
    if options.get("approaches", "all") in ("3", "all"):
        enable_compile_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        doc = fit_source_with_forecast(src, **options)
    for w in caught:
        if issubclass(w.category, FitWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    return doc, write_fit(output or default_fit_path(src, options.get("metric")), doc)


def run_task(args: argparse.Namespace) -> int:
    """`scaling fit SRC --task NAME`: both steps of the downstream forecast, saved."""
    if args.metric != "loss":
        raise UserError("--task: fits its own metrics (task/NAME/loss, task/NAME/accuracy); "
                        "leave out --metric")
    unused = [flag for flag, given in (("--approach", args.approach != "all"),
                                       ("--holdout", args.holdout), ("--rollout", args.rollout),
                                       ("--fix-E", args.fix_E is not None),
                                       ("--drop-highest", args.drop_highest)) if given]
    if unused:
        raise UserError(f"--task: step 1 is Approach 3 on the task's loss; {unused[0]} does "
                        "not apply (use `scaling fit --metric task/NAME/loss` for it)")
    enable_compile_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        fit = fit_task_source(args.src, args.task, convention=args.convention,
                              exclude=args.exclude, params_kind=args.params, seed=args.seed,
                              n_bootstrap=args.bootstrap or DEFAULT_TASK_BOOTSTRAP,
                              level=args.level)
    for w in caught:
        if issubclass(w.category, FitWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    out = write_task_fit(args.output or default_task_fit_path(args.src, args.task), fit)
    print(to_json(fit.to_dict()) if args.json else "\n".join([*fit.summary(), f"wrote {out}"]))
    return 0


def run(args: argparse.Namespace) -> int:
    w = args.overestimate_penalty
    if not (math.isfinite(w) and w > 0):
        raise UserError(f"--overestimate-penalty: expected a positive number (1 = symmetric), "
                        f"got {w}")
    if args.task is not None:
        return run_task(args)
    if run_labelled(args):
        return 0
    doc, out = fit_and_write(args.src, args.output, approaches=args.approach,
                             drop_highest=args.drop_highest, convention=args.convention,
                             n_bootstrap=args.bootstrap, level=args.level, seed=args.seed,
                             params_kind=args.params, holdout=args.holdout,
                             exclude=args.exclude, fix_E=args.fix_E, rollout=args.rollout,
                             metric=args.metric, overestimate_penalty=w)
    if args.json:
        print(to_json(doc.to_dict()))
    else:
        print(format_table(doc))
        print(f"wrote {out}")
    return 0


def run_labelled(args: argparse.Namespace) -> bool:
    """Per-label (and joint) fits when SRC has 2+ labels or --joint is given; False when
    SRC is not labelled (the plain fit runs)."""
    enable_compile_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        fitted = fit_labels(args.src, label_column=args.label_column, joint=args.joint,
                            approaches=args.approach, drop_highest=args.drop_highest,
                            convention=args.convention, n_bootstrap=args.bootstrap,
                            level=args.level, seed=args.seed, params_kind=args.params,
                            holdout=args.holdout, exclude=args.exclude, fix_E=args.fix_E,
                            rollout=args.rollout, metric=args.metric,
                            overestimate_penalty=args.overestimate_penalty)
    if fitted is None:
        return False
    for w in caught:
        if issubclass(w.category, FitWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    index = write_labelled(fitted, args.output or default_fit_path(args.src, args.metric))
    if args.json:
        print(to_json({"labels": {k: d.to_dict() for k, d in fitted.docs.items()},
                       "joint": None if fitted.joint is None else fitted.joint.to_dict()}))
        return True
    for label, doc in fitted.docs.items():
        print(f"== label {label}")
        print(format_table(doc))
    if fitted.joint is not None:
        print(format_joint(fitted.joint))
    print(f"wrote {index} (and fit.<label>.json beside it)")
    return True


def format_joint(joint: JointFit) -> str:
    """Each label's law under the shared parameters, and what sharing cost."""
    lines = [f"== joint fit ({joint.mode}): "
             + ", ".join(f"{k} = {fmt_num(v)}" for k, v in joint.shared.items()),
             "  label        E        A          B          alpha    beta"]
    for label, law in joint.laws.items():
        lines.append(f"  {label:<12} {fmt_num(law.E):<8} {fmt_num(law.A):<10} "
                     f"{fmt_num(law.B):<10} {fmt_num(law.alpha):<8} {fmt_num(law.beta)}")
    lines.append(f"  Huber objective {fmt_num(joint.objective)} (labels fitted apart: "
                 f"{fmt_num(joint.independent_objective)})")
    return "\n".join(lines)


_ROWS = [("a", "a  (N* ~ C^a)"), ("b", "b  (D* ~ C^b)"), ("k_params", "k_params"),
         ("k_tokens", "k_tokens"), ("G", "G"), ("alpha", "alpha"), ("beta", "beta"),
         ("E", "E"), ("A", "A"), ("B", "B"), ("objective", "Huber objective"),
         ("n_points", "points")]


def format_table(doc: FitDocument) -> str:
    """All approaches side by side; CIs in brackets where bootstrapped."""
    cols = [k for k in ("approach1", "approach2", "approach3", "vpnls") if k in doc.approaches]
    fitted = doc.fitted()
    header = ["", *cols]
    lines = []
    for key, label in _ROWS:
        cells = []
        for c in cols:
            value = fitted[c].to_dict().get(key) if c in fitted else None
            ci = doc.interval(c, key)
            cells.append("-" if value is None else fmt_num(value) + (
                f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]" if ci else ""))
        if any(c != "-" for c in cells):
            lines.append([label, *cells])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    text += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in lines]
    return "\n".join(text + _notes(doc) + forecast_notes(doc.to_dict()))


def _notes(doc: FitDocument) -> list[str]:
    notes = [f"{doc.source}: {doc.n_points} points, N = {doc.params_kind} params, "
             f"FLOPs {doc.convention}" + ("" if doc.metric == "loss" else
                                          f", fitted metric {doc.metric}")]
    if doc.excluded:
        notes.append("excluded: " + ", ".join(f"{v} {k}" for k, v in doc.excluded.items()))
    notes += [f"{name}: {error}" for name, error in doc.errors().items()]
    a2 = doc.fitted().get("approach2")
    if isinstance(a2, PowerLawResult) and a2.n_unbracketed:
        notes.append(f"approach2: {a2.n_unbracketed} budget minima not bracketed")
    if doc.bootstrap:
        notes.append(f"[lo, hi]: {doc.level():.0%} bootstrap percentile intervals")
    if "holdout" in doc.validation:
        h = doc.validation["holdout"].predicted["approach3"]
        notes.append(f"holdout (largest budget): approach3 ln(N* pred/obs) = "
                     f"{h['params_opt_log_error']:+.3f}, loss error {h['loss_opt_error']:+.4f}")
    return notes


def forecast_notes(doc: dict) -> list[str]:
    """Noise, outliers, frontier and rollout lines under the table."""
    out = []
    noise = doc.get("noise")
    if noise:
        lo, hi = noise["sigma_ci"]
        out.append(f"noise: sigma {noise['sigma']:.3g} of log loss [{lo:.3g}, {hi:.3g}] "
                   f"from {noise['source']} ({noise['note']})")
        ext = noise.get("extrapolation")
        if ext:
            out.append(f"extrapolation error: tau {ext['tau']:.3g} of log loss per unit "
                       f"ln-distance beyond the fitted range ({ext['note']})")
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
