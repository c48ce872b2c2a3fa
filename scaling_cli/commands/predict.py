"""The loss a saved fit predicts for one run at (N, D), or at C with one of N, D.

Prints, per parametric approach (approach3, vpnls), the predicted loss with its confidence
interval (the law's bootstrap spread; needs `scaling fit --bootstrap`) and its prediction
interval (the law plus the run-to-run noise measured by the fit). --json prints one object:
loss, loss_ci, loss_pi, approach, level (the first approach's), and each approach's own
under `approaches`.

With --task NAME: the downstream forecast saved by `scaling fit SRC --task NAME`
(analysis.downstream): the task loss at (N, D) from step 1 and the accuracy it maps to
through step 2, with bootstrap intervals through both steps. --json keys: task, accuracy,
accuracy_ci, task_loss, task_loss_ci, task_loss_pi, chance, ceiling, k, L0, level,
n_params, n_tokens, flops, n_bootstrap, task_loss_range, extrapolated, sigma,
noise_source, fit_path (docs/architecture.md).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fit", default="runs", metavar="FIT.json|RUNS_DIR|CSV",
                        help="a fit.json, or a runs dir / CSV with a saved fit (default: runs)")
    parser.add_argument("--params", type=float, metavar="N", help="parameters N")
    parser.add_argument("--tokens", type=float, metavar="D", help="training tokens D")
    parser.add_argument("--flops", type=float, metavar="C",
                        help="training FLOPs C = 6 N D (with one of --params, --tokens)")
    parser.add_argument("--level", type=float, default=0.8,
                        help="interval level (default 0.8)")
    parser.add_argument("--task", default=None, metavar="NAME",
                        help="forecast task NAME's accuracy (needs `scaling fit SRC --task "
                             "NAME`; --fit then names SRC or the saved task fit)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_task(args: argparse.Namespace) -> int:
    from analysis.downstream import predict_task, read_task_fit, resolve_task_fit_path
    from analysis.predict import resolve_point
    from scaling.fileio import to_json

    n, d = resolve_point(args.params, args.tokens, args.flops)
    fit_path = resolve_task_fit_path(args.fit, args.task)
    out = predict_task(read_task_fit(fit_path, args.task), n, d, level=args.level)
    out["fit_path"] = str(fit_path)
    if args.json:
        print(to_json(out))
        return 0

    def interval(name: str, ci: list[float] | None, fmt: str) -> str:
        return f"{name} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else f"{name} -"

    print(f"N = {n:.4g} params, D = {d:.4g} tokens, C = {6 * n * d:.4g} FLOPs; fit {fit_path}")
    print(f"task {out['task']}: accuracy {out['accuracy']:.4f}  "
          f"{interval('CI', out['accuracy_ci'], '.4f')}  ({args.level:.0%}; chance "
          f"{out['chance']:.4g}, ceiling {out['ceiling']:.4g})")
    print(f"task loss {out['task_loss']:.4f}  {interval('CI', out['task_loss_ci'], '.4f')}  "
          f"{interval('PI', out['task_loss_pi'], '.4f')}")
    if out["extrapolated"]:
        lo, hi = out["task_loss_range"]
        print(f"note: task loss {out['task_loss']:.4g} is outside the fitted runs' "
              f"{lo:.4g}..{hi:.4g}: step 2's sigmoid is extrapolated")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.task is not None:
        return run_task(args)
    from analysis.fitdoc import read_fit, resolve_fit_path
    from analysis.predict import predict_from_fit, resolve_point
    from scaling.fileio import to_json

    n, d = resolve_point(args.params, args.tokens, args.flops)
    fit_path = resolve_fit_path(args.fit)
    out = predict_from_fit(read_fit(fit_path), n, d, level=args.level)
    out["fit_path"] = str(fit_path)
    if args.json:
        print(to_json(out))
        return 0
    print(f"N = {n:.4g} params, D = {d:.4g} tokens, C = {6 * n * d:.4g} FLOPs; fit {fit_path}")
    print(f"noise: sigma {out['sigma']:.4g} of log loss ({out['noise_source']})")
    for key, p in out["approaches"].items():
        ci = (f"CI [{p['loss_ci'][0]:.4f}, {p['loss_ci'][1]:.4f}]" if p["loss_ci"]
              else "CI - (no bootstrap in the fit)")
        print(f"{key:10s} loss {p['loss']:.4f}  {ci}  PI [{p['loss_pi'][0]:.4f}, "
              f"{p['loss_pi'][1]:.4f}]  ({args.level:.0%})")
    return 0
