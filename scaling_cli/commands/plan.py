"""Print the IsoFLOP grid for --budget values (or a sweep spec); runs nothing.

For each budget, K model sizes log-spaced over a factor --span around the size that would
see about 20 tokens per parameter, each solved to a real shape, with tokens set so the
run's FLOPs under --convention are within 1% of the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.errors import UserError, positive_number
from scaling.flops import check_convention
from scaling.model_config import DEFAULT_SEQ_LEN
from scaling_cli.commands._format import si
from sweeps import hparams
from sweeps.grid import plan_budget_full
from sweeps.plan import format_summary, plan_summary, plan_sweep
from sweeps.spec import check_argument, check_number, load_spec
from sweeps.tune import plan_tune

COLUMNS = ("budget", "N", "non-emb N", "layers", "d_model", "heads", "tokens", "tokens/param",
           "FLOPs", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", metavar="SPEC",
                        help="sweep spec (TOML); needs sweeps.spec")
    parser.add_argument("--budget", action="append", metavar="C", default=[],
                        help="FLOP budget, e.g. 1e18 (repeat for several)")
    parser.add_argument("--sizes", metavar="K", default="7",
                        help="model sizes per budget (>= 3, default 7)")
    parser.add_argument("--span", metavar="F", default="30",
                        help="ratio of the largest to the smallest size (default 30)")
    parser.add_argument("--convention", metavar="NAME", default="6N",
                        help="FLOP convention: 6N, kaplan, chinchilla or deepseek (default 6N)")
    parser.add_argument("--vocab-size", metavar="V", default="256",
                        help="vocabulary size (default 256, the byte tokenizer)")
    parser.add_argument("--seq-len", metavar="L", default=str(DEFAULT_SEQ_LEN),
                        help=f"sequence length (default {DEFAULT_SEQ_LEN})")
    parser.add_argument("--tokens-per-second", metavar="R", default=None,
                        help="with SPEC: training rate for the wall-time estimate (default: "
                             "measured on finished runs in --runs-dir)")
    parser.add_argument("--runs-dir", metavar="DIR", default=None,
                        help="with SPEC: where finished runs calibrate the estimate and "
                             "fitted:<sweep> lr laws are found (default: $SCALING_RUNS_DIR, "
                             "else runs)")
    parser.add_argument("--simulate", action="store_true",
                        help="with SPEC: refit many simulated copies of this grid and print "
                             "the expected 80%% interval widths of a, N* and the loss at 10x the "
                             "largest budget (law and noise: the sweep's fit.json, or --fit, if "
                             "any, else Epoch's fit of Chinchilla at 1%% noise)")
    parser.add_argument("--fit", metavar="FIT.json|RUNS_DIR|CSV", default=None,
                        help="with --simulate: the fit whose law and measured noise to "
                             "simulate (default: RUNS_DIR/SWEEP/fit.json when it exists)")
    parser.add_argument("--noise", metavar="SIGMA", default=None,
                        help="with --simulate: relative loss noise per run (default: the "
                             "fit's measured noise, else 0.01)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of runs instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.spec is not None:
        if args.budget:
            raise UserError("--budget: give either SPEC or --budget values, not both")
        return _run_spec(args)
    if not args.budget:
        raise UserError("--budget: expected at least one FLOP budget (or a SPEC file)")
    # each bound is the spec field's (grid.sizes, grid.span, data.seq_len, budgets)
    n_sizes = check_argument(args.sizes, "grid.sizes", "--sizes")
    span = check_argument(args.span, "grid.span", "--span")
    convention = check_convention(args.convention, "--convention")
    vocab_size = check_number(args.vocab_size, "--vocab-size", integer=True, lo=1)
    seq_len = check_argument(args.seq_len, "data.seq_len", "--seq-len")
    budgets = [check_argument(text, "budgets", "--budget") for text in args.budget]
    try:
        plans = [plan_budget_full(budget, n_sizes=n_sizes, span=span, convention=convention,
                                  vocab_size=vocab_size, seq_len=seq_len) for budget in budgets]
    except UserError as e:
        raise UserError(f"--{e}" if str(e).startswith("budget:") else str(e)) from None
    planned = [r for p in plans for r in p.runs]
    dropped = [d for p in plans for d in p.dropped]
    if args.json:
        print(json.dumps([run.to_dict() for run in planned], indent=2))
    else:
        print(format_table(planned))
    for d in dropped:
        print(f"note: budget {d.budget:.3g}: dropped size {si(d.target_params)}: {d.reason}",
              file=sys.stderr)
    return 0


def _run_spec(args: argparse.Namespace) -> int:
    rate = (None if args.tokens_per_second is None
            else positive_number(args.tokens_per_second, "--tokens-per-second"))
    noise = (check_number(args.noise, "--noise", lo=0)
             if args.simulate and args.noise is not None else None)
    runs_dir = Path(args.runs_dir) if args.runs_dir is not None else hparams.default_runs_dir()
    spec = load_spec(args.spec)
    own_law = hparams.law_path(spec.name, runs_dir)
    if (spec.tune is not None and spec.optim.recipe == f"{hparams.FITTED_PREFIX}{spec.name}"
            and not own_law.is_file() and not args.json):
        print(_tune_lines(spec, own_law))
        print(f"the grid's lr comes from this [tune] block's law, not fitted yet at {own_law}: "
              "`scaling sweep` trains the tuning runs first, then plans the grid")
        return 0
    plan = plan_sweep(spec, runs_dir=runs_dir)
    planned = [item.planned for item in plan.runs]
    if args.json:
        print(json.dumps([run.to_dict() for run in planned], indent=2))
        return 0
    print(format_table(planned))
    print(format_summary(plan_summary(plan, tokens_per_second=rate, runs_dir=runs_dir)))
    if plan.runs and plan.runs[0].recipe.startswith(hparams.FITTED_PREFIX):
        recipe = hparams.get_recipe(spec.optim.recipe, runs_dir=runs_dir)
        print(f"recipe {recipe.name}: {recipe.description} "
              f"({hparams.law_path(recipe.name[len(hparams.FITTED_PREFIX):], runs_dir)})")
    if spec.tune is not None:
        print(_tune_lines(spec, own_law))
    if args.simulate:
        print(_simulation(planned, runs_dir / plan.spec.name, noise, args.fit))
    return 0


def _tune_lines(spec, law_file: Path) -> str:
    """The [tune] block's runs (trained before the grid) and where its law goes."""
    tune = plan_tune(spec)
    grid = (f"{len(spec.tune.cells)} cells x {len(spec.tune.batch_sizes) or 1} batch sizes x "
            f"{len(spec.tune.lr_multipliers)} lr multipliers")
    state = "fitted" if law_file.is_file() else "not fitted yet"
    return (f"tune: {len(tune)} runs ({grid}), {sum(r.flops for r in tune):.4g} FLOPs, trained "
            f"before the grid; law {law_file} ({state})")


def _simulation(planned: list, sweep_dir: Path, noise: float | None,
                fit_arg: str | None = None) -> str:
    """What a fit of this grid would pin down, from refits of simulated studies."""
    # analysis imports pandas and JAX: only --simulate pays for them, not `scaling --help`
    import pandas as pd

    from analysis.fitdoc import read_fit, resolve_fit_path
    from analysis.simulate import simulate_study, study_inputs

    fit_path = resolve_fit_path(fit_arg) if fit_arg is not None else sweep_dir / "fit.json"
    fit = read_fit(fit_path) if fit_arg is not None or fit_path.is_file() else None
    inputs = study_inputs(fit, str(fit_path) if fit is not None else "", noise)
    law, source, noise = inputs.law, inputs.law_source, inputs.noise
    design = pd.DataFrame({"params": [p.n_params for p in planned],
                           "tokens": [p.n_tokens for p in planned],
                           "budget": [p.budget for p in planned]})
    target = 10 * max(p.budget for p in planned)
    report = simulate_study(design, law, noise=noise, n_sims=200, target_flops=target)
    lines = [f"simulated refits (200 studies of this grid, {noise:.2%} loss noise, law: "
             f"{source}):", f"  noise: {inputs.noise_source}"]
    for key, label in (("approach3.a", "a (Approach 3)"), ("approach2.a", "a (Approach 2)"),
                       ("approach3.params_opt", f"N* at {target:.3g}"),
                       ("approach3.loss_opt", f"loss at {target:.3g}")):
        if key in report.samples:
            lo, hi = report.interval(key)
            lines.append(f"  {label:<22} truth {report.truth[key]:.4g}, 80% of fits in "
                         f"[{lo:.4g}, {hi:.4g}]")
    return "\n".join(lines)


def format_table(planned: list) -> str:
    """Plain aligned text: one row per run, numbers in human units."""
    rows = [COLUMNS]
    for r in planned:
        rows.append((f"{r.budget:.2e}", si(r.n_params), si(r.n_params_non_embedding),
                     str(r.config.n_layers), str(r.config.d_model), str(r.config.n_heads),
                     si(r.n_tokens), f"{r.tokens_per_param:.3g}", f"{r.flops:.4e}",
                     f"{r.rel_error:+.3%}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
