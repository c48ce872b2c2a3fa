"""Optimal parameters, tokens, shape and predicted loss for a compute budget, from a saved fit.

--fit takes a fit.json, or a runs directory / CSV whose saved fit (written by `scaling fit`)
is used. --inference-tokens switches to the inference-aware plan (Sardana et al. 2023);
--unique-tokens to the data-constrained plan (Muennighoff et al. 2023).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from analysis import artifacts
from analysis.fitdoc import read_fit, resolve_fit_path
from analysis.numfmt import fmt_num
from analysis.plots import human_count
from analysis.recommend import family_options, recommend
from scaling.errors import UserError
from scaling.fileio import to_json

APPROACH_ALIASES = {"1": "approach1", "2": "approach2", "3": "approach3", "vpnls": "vpnls",
                    "approach1": "approach1", "approach2": "approach2",
                    "approach3": "approach3"}


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--budget", type=positive_float, required=True, metavar="C",
                        help="training compute in FLOPs, e.g. 1e21")
    parser.add_argument("--fit", default="runs", metavar="FIT.json|RUNS_DIR|CSV",
                        help="a fit.json, or a runs dir / CSV with a saved fit (default: runs)")
    parser.add_argument("--approach", default="3", choices=sorted(APPROACH_ALIASES),
                        help="which fitted frontier to use (default 3: the parametric law)")
    parser.add_argument("--inference-tokens", type=positive_float, metavar="T",
                        help="expected lifetime inference tokens: inference-aware plan")
    parser.add_argument("--unique-tokens", type=positive_float, metavar="U",
                        help="unique training tokens available: data-constrained plan")
    parser.add_argument("--vocab-size", type=int, metavar="V",
                        help="vocabulary of the shape (default: the runs' own, else 32000)")
    parser.add_argument("--seq-len", type=int, metavar="L",
                        help="sequence length of the shape (default: the runs' own, else 2048)")
    parser.add_argument("--level", type=positive_float,
                        help="interval level (default: the bootstrap's own, 0.8)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def run(args) -> int:
    fit_path = resolve_fit_path(args.fit)
    fit = read_fit(fit_path)
    family = artifacts.runs_model(Path(args.fit))
    if family.vocab_size is None and fit.source:
        family = artifacts.runs_model(Path(fit.source))
    for name in ("vocab_size", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    rec = recommend(
        fit, args.budget, approach=APPROACH_ALIASES[args.approach],
        inference_tokens=args.inference_tokens, unique_tokens=args.unique_tokens,
        level=args.level, **family_options(family, args.vocab_size, args.seq_len))
    if args.json:
        out = rec.to_dict()
        out["fit_path"] = str(fit_path)
        print(to_json(out))
    else:
        print(format_recommendation(rec, fit_path))
    return 0


def _count(x) -> str:
    return human_count(x) if x is not None else "-"


def _with_ci(rec, name: str, value, fmt) -> str:
    ci = rec.ci.get(name)
    return f"{fmt(value)}  [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else fmt(value)


def format_recommendation(rec, fit_path) -> str:
    """The plan as a few aligned lines a person reads at a glance."""
    level = (f" ({rec.level:.0%} intervals from {rec.n_bootstrap} bootstrap fits)"
             if rec.level and rec.n_bootstrap else "")
    lines = [f"Budget {rec.budget:.3g} FLOPs, {rec.approach}, {rec.mode.replace('_', '-')}"
             f"{level}", f"fit: {fit_path}", ""]
    kind = "non-embedding" if rec.params_kind == "non_embedding" else "total"
    rows = [(f"parameters N ({kind})", _with_ci(rec, "n_params", rec.n_params, _count)),
            ("tokens D", _with_ci(rec, "n_tokens", rec.n_tokens, _count)),
            ("tokens per parameter", _with_ci(rec, "tokens_per_param", rec.tokens_per_param,
                                              lambda x: f"{x:.1f}")),
            ("predicted loss", _with_ci(rec, "loss", rec.loss, fmt_num) + " nats/token"
             if rec.loss is not None else "-")]
    if rec.loss_pi:
        rows.append((f"{rec.level:.0%} prediction interval",
                     f"[{fmt_num(rec.loss_pi[0])}, {fmt_num(rec.loss_pi[1])}] (one run: law, "
                     "noise and extrapolation error)"))
    if rec.mode != "compute_optimal":
        co = rec.compute_optimal
        rows.append(("compute-optimal N, D", f"{_count(co['n_params'])}, {_count(co['n_tokens'])}"))
    if rec.inference:
        inf = rec.inference
        rows += [("inference tokens", _count(inf["inference_tokens"])),
                 ("training FLOPs", f"{inf['train_flops']:.3g}"),
                 ("inference FLOPs", f"{inf['inference_flops']:.3g}"),
                 ("total FLOPs", _with_ci(rec, "inference.total_flops", inf["total_flops"],
                                          lambda x: f"{x:.3g}")),
                 ("vs compute-optimal", f"{inf['compute_optimal_total_flops']:.3g} total; saves "
                  + _with_ci(rec, "inference.saving_fraction", inf["saving_fraction"],
                             lambda x: f"{x:.1%}"))]
    if rec.data_constrained:
        dc = rec.data_constrained
        rows += [("unique tokens", _count(dc["unique_tokens"])),
                 ("epochs", _with_ci(rec, "data_constrained.epochs", dc["epochs"],
                                     lambda x: f"{x:.2f}")),
                 ("effective tokens D'", _count(dc["effective_tokens"])),
                 ("effective params N'", _count(dc["effective_params"])),
                 ("Chinchilla plan on this data", f"{dc['compute_optimal_epochs']:.2f} epochs, "
                  f"loss {dc['compute_optimal_loss_repeated']:.4g}"),
                 ("decay constants", f"R_D* = {dc['r_d_star']}, R_N* = {dc['r_n_star']} "
                  "(Muennighoff et al. 2023)")]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    if rec.shape:
        s = rec.shape
        lines += ["", f"shape (nearest under recipe {rec.shape_recipe}):",
                  f"  n_layers={s['n_layers']} d_model={s['d_model']} n_heads={s['n_heads']} "
                  f"head_dim={s['head_dim']} d_ff={s['d_ff']} mlp={s['mlp']} "
                  f"vocab={s['vocab_size']} seq_len={s['seq_len']}",
                  f"  {rec.shape_params:,} parameters ({_count(rec.shape_params)} total"
                  + (f", {_count(rec.shape_params_non_embedding)} non-embedding"
                     if rec.shape_params_non_embedding is not None else "")
                  + f"), {rec.shape_rel_error:+.2%} vs N; train it on {_count(rec.shape_tokens)} "
                  "tokens for the same compute"]
    if rec.notes:
        lines += [""] + [f"note: {n}" for n in rec.notes]
    return "\n".join(lines)
