"""Run the demo study end to end: sweep, fit (with bootstrap), report, recommendation.

Each step is the `scaling` command of the same name, so what the demo does is what a user
types; run it again after an interruption and it continues where it stopped (finished runs
are skipped, interrupted ones resume from their checkpoints). Ends with the headline: the
fitted exponents a and b with their intervals from all three approaches, the recommended
N, D and shape for 10x the largest budget swept, the predicted loss, and the report's path.
"""

from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from scaling_cli.commands._format import si


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default="examples/demo.toml", metavar="SPEC",
                        help="sweep spec (default: examples/demo.toml)")
    parser.add_argument("--runs-dir", default="runs", metavar="DIR",
                        help="where run directories go (default: runs)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="parallel runs (default: the spec's)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the intervals (default 1000)")


def _call(argv: list[str], capture: bool = False) -> str:
    from scaling_cli.main import main
    from scaling.errors import RunFailed

    out = io.StringIO()
    if capture:
        with redirect_stdout(out):
            code = main(argv)
    else:
        code = main(argv)
    if code:
        raise RunFailed(f"'scaling {' '.join(argv)}' exited with {code}")
    return out.getvalue()


def _ci(block: dict, key: str) -> str:
    value, ci = block.get(key), block.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    from scaling.errors import UserError
    from scaling.fileio import read_json
    from sweeps.spec import load_spec

    spec = load_spec(args.spec)
    if args.bootstrap < 1:
        raise UserError(f"--bootstrap: expected >= 1 resamples, got {args.bootstrap}")
    sweep_dir = Path(args.runs_dir) / spec.name
    sweep = ["sweep", args.spec, "--runs-dir", args.runs_dir]
    if args.workers is not None:
        sweep += ["--workers", str(args.workers)]
    _call(sweep)
    boot = ["--bootstrap", str(args.bootstrap)]
    if len(spec.budgets) >= 3:  # leave-largest-budget-out needs two budgets left to fit
        boot.append("--holdout")
    print(_call(["fit", str(sweep_dir), *boot]))
    # At this scale the embeddings are a large share of N: fit with both counts.
    nonemb_path = sweep_dir / "fit_non_embedding.json"
    _call(["fit", str(sweep_dir), *boot, "--params", "non_embedding", "-o", str(nonemb_path)],
          capture=True)
    fit = read_json(sweep_dir / "fit.json")
    nonemb = read_json(nonemb_path)
    budget = 10 * max(spec.budgets)
    _call(["report", str(sweep_dir), "--budget", f"{budget:g}"], capture=True)
    rec = json.loads(_call(["recommend", "--budget", f"{budget:g}", "--fit", str(sweep_dir),
                            "--json"], capture=True))

    lines = [f"Demo study: {sweep_dir} ({fit['n_points']} runs, budgets "
             f"{', '.join(f'{b:.3g}' for b in spec.budgets)} FLOPs)",
             "", "exponents (80% bootstrap intervals)    N* ~ C^a                  D* ~ C^b"]
    for key, name in (("approach1", "Approach 1 (envelope)"), ("approach2", "Approach 2 (IsoFLOP)"),
                      ("approach3", "Approach 3 (parametric)")):
        block = fit.get(key, {})
        if "error" in block or not block:
            lines.append(f"  {name:<35} not fitted: {block.get('error', 'missing')}")
        else:
            lines.append(f"  {name:<35} {_ci(block, 'a'):<25} {_ci(block, 'b')}")
    a3 = nonemb.get("approach3", {})
    if a3 and "error" not in a3:
        lines.append(f"  {'Approach 3, non-embedding N':<35} {_ci(a3, 'a'):<25} {_ci(a3, 'b')}")
    ci = rec.get("ci", {})
    shape = rec.get("shape") or {}

    def with_ci(key: str, fmt) -> str:
        lo_hi = ci.get(key)
        return f"{fmt(rec[key])}" + (f" [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "")

    lines += ["", f"recommendation for {budget:.3g} FLOPs (10x the largest budget swept):",
              f"  parameters N*   {with_ci('n_params', si)}",
              f"  tokens D*       {with_ci('n_tokens', si)}  "
              f"({rec['tokens_per_param']:.0f} tokens per parameter)",
              f"  shape           {shape.get('n_layers')} layers x d_model {shape.get('d_model')}, "
              f"{shape.get('n_heads')} heads, d_ff {shape.get('d_ff')} "
              f"({si(rec.get('shape_params') or 0)} parameters)",
              f"  predicted loss  {with_ci('loss', lambda x: f'{x:.3f}')} nats/token",
              "", f"report: {sweep_dir / 'report' / 'report.html'}"]
    print("\n".join(lines))
    return 0
