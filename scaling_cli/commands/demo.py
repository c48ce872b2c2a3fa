"""Run the demo study end to end: sweep, fit (with bootstrap), report, recommendation.

Each step calls the library function behind the `scaling` command of the same name, so
what the demo does is what a user types; run it again after an interruption and it
continues where it stopped (finished runs are skipped, interrupted ones resume from their
checkpoints). Ends with the headline: the fitted exponents a and b with their intervals from
all three approaches, the recommended N, D and shape for 10x the largest budget swept, the
predicted loss, and the report's path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.artifacts import model_dims
from analysis.fitdoc import FitDocument
from analysis.plots import human_count
from analysis.recommend import DEFAULT_SEQ_LEN, DEFAULT_VOCAB_SIZE, recommend
from analysis.report import build_report
from scaling.errors import RunFailed, UserError
from scaling_cli.commands.fit import fit_and_write, format_table
from sweeps.spec import load_spec
from sweeps.sweep import run_sweep

HEADLINE = (("approach1", "Approach 1 (envelope)"), ("approach2", "Approach 2 (IsoFLOP)"),
            ("approach3", "Approach 3 (parametric)"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default="examples/demo.toml", metavar="SPEC",
                        help="sweep spec (default: examples/demo.toml)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR",
                        help="where run directories go (default: runs)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="parallel runs (default: the spec's)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the intervals (default 1000)")


def _ci(fit: FitDocument, name: str, key: str) -> str:
    value, ci = getattr(fit.approaches[name], key), fit.interval(name, key)
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _exponents(fit: FitDocument, nonemb: FitDocument) -> list[str]:
    lines = ["exponents (80% bootstrap intervals)    N* ~ C^a                  D* ~ C^b"]
    for key, name in HEADLINE:
        if key in fit.fitted():
            lines.append(f"  {name:<35} {_ci(fit, key, 'a'):<25} {_ci(fit, key, 'b')}")
        else:
            lines.append(f"  {name:<35} not fitted: {fit.errors().get(key, 'missing')}")
    if "approach3" in nonemb.fitted():
        lines.append(f"  {'Approach 3, non-embedding N':<35} {_ci(nonemb, 'approach3', 'a'):<25} "
                     f"{_ci(nonemb, 'approach3', 'b')}")
    return lines


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.bootstrap < 1:
        raise UserError(f"--bootstrap: expected >= 1 resamples, got {args.bootstrap}")
    sweep_dir = Path(args.runs_dir) / spec.name
    outcome = run_sweep(spec, args.runs_dir, workers=args.workers)
    unfinished = [s for s in outcome.states.values() if s not in ("done", "diverged", "failed")]
    if outcome.count("failed") or unfinished:
        raise RunFailed(f"sweep {spec.name}: {outcome.count('failed')} run(s) failed, "
                        f"{len(unfinished)} unfinished; see `scaling status {args.runs_dir}`")
    print(f"sweep {spec.name}: {outcome.count('done')}/{len(outcome.states)} done")
    # leave-largest-budget-out needs two budgets left to fit
    options = {"n_bootstrap": args.bootstrap, "holdout": len(spec.budgets) >= 3}
    fit, fit_path = fit_and_write(sweep_dir, **options)
    print(format_table(fit) + f"\nwrote {fit_path}\n")
    # At this scale the embeddings are a large share of N: fit with both counts.
    nonemb, _ = fit_and_write(sweep_dir, sweep_dir / "fit_non_embedding.json",
                              params_kind="non_embedding", **options)
    budget = 10 * max(spec.budgets)
    report = build_report(sweep_dir, budget=budget)
    vocab, seq_len = model_dims(sweep_dir)
    rec = recommend(fit, budget, vocab_size=vocab or DEFAULT_VOCAB_SIZE,
                    seq_len=seq_len or DEFAULT_SEQ_LEN)

    def with_ci(key: str, fmt) -> str:
        lo_hi = rec.ci.get(key)
        return fmt(getattr(rec, key)) + (f" [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "")

    shape = rec.shape or {}
    lines = [f"Demo study: {sweep_dir} ({fit.n_points} runs, budgets "
             f"{', '.join(f'{b:.3g}' for b in spec.budgets)} FLOPs)", "",
             *_exponents(fit, nonemb),
             "", f"recommendation for {budget:.3g} FLOPs (10x the largest budget swept):",
             f"  parameters N*   {with_ci('n_params', human_count)}",
             f"  tokens D*       {with_ci('n_tokens', human_count)}  "
             f"({rec.tokens_per_param:.0f} tokens per parameter)",
             f"  shape           {shape.get('n_layers')} layers x d_model {shape.get('d_model')}, "
             f"{shape.get('n_heads')} heads, d_ff {shape.get('d_ff')} "
             f"({human_count(rec.shape_params or 0)} parameters)",
             f"  predicted loss  {with_ci('loss', lambda x: f'{x:.3f}')} nats/token",
             "", f"report: {report.html}"]
    print("\n".join(lines))
    return 0
