"""Figures and tables of a `[tune]` block's law (analysis.lr_law) for the report.

As in analysis.plots, nothing is fitted here: the curves are the parabolas saved in
lr_law.json with each cell, the law's line is its saved coefficients and the band the
percentiles of its saved bootstrap samples (at the law's level).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from analysis.lr_law import BatchOptimum, CellOptimum, LrLaw, batch_cells_of, read_law
from analysis.plots import (
    OKABE_ITO,
    _legend_outside,
    _log_axis,
    _new_figure,
    human_count,
    save_figure,
)
from scaling.errors import UserError
from scaling.fileio import read_json_object

LAW_FILE = "lr_law.json"
FITTED_PREFIX = "fitted:"  # the recipe name sweeps.hparams gives a law (sweeps is a layer up)
TUNE_SUFFIX = "-tune"


def find_tune_laws(src: str | Path) -> list[tuple[Path, LrLaw]]:
    """The tune laws that belong to a report's source: a tune dir itself (its lr_law.json),
    a sweep dir (the sibling ``<name>-tune/``, where that sweep's [tune] block saves it, and
    the law of every ``fitted:<sweep>`` recipe its runs recorded), or a runs dir (every
    ``*-tune/lr_law.json`` in it). An unreadable file is skipped."""
    src = Path(src)
    if not src.is_dir():
        return []
    candidates = [src / LAW_FILE, src.parent / f"{src.name}{TUNE_SUFFIX}" / LAW_FILE]
    for config in sorted(src.glob("*/config.json")):
        try:
            recipe = str(read_json_object(config).get("recipe") or "")
        except UserError:
            continue
        if recipe.startswith(FITTED_PREFIX):
            sweep = recipe[len(FITTED_PREFIX):].split("[")[0]  # overrides append "[...]"
            candidates.append(src.parent / f"{sweep}{TUNE_SUFFIX}" / LAW_FILE)
    candidates += sorted(src.glob(f"*{TUNE_SUFFIX}/{LAW_FILE}"))
    out, seen = [], set()
    for path in candidates:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            try:
                out.append((path, read_law(path)))
            except UserError:
                continue
    return out


def _cell_groups(law: LrLaw) -> list[list[CellOptimum]]:
    """Cells by (N, FLOPs): one panel each, a curve per batch size."""
    groups: dict[tuple, list[CellOptimum]] = {}
    for c in law.cells:
        key = (c.n_params, c.flops if c.flops is not None else c.n_tokens)
        groups.setdefault(key, []).append(c)
    return [sorted(g, key=lambda c: c.batch_tokens or 0.0) for g in groups.values()]


def _curve(ax, c: CellOptimum, color, label: str) -> None:
    lrs, losses = np.asarray(c.lrs), np.asarray(c.losses)
    ok = np.isfinite(losses)
    ax.plot(lrs[ok], losses[ok], "o", color=color, mfc=color if c.bracketed else "white",
            ms=5, label=label + ("" if c.bracketed else " (not bracketed)"))
    if (~ok).any():  # diverged: drawn at the top edge, where the loss left the plot
        top = np.max(losses[ok]) if ok.any() else 1.0
        ax.plot(lrs[~ok], np.full((~ok).sum(), top), "x", color=color, ms=7, mew=2)
    if c.coeffs is not None and ok.sum() >= 3:
        grid = np.geomspace(lrs[ok].min(), lrs[ok].max(), 100)
        ax.plot(grid, np.polyval(c.coeffs, np.log(grid)), "-" if c.bracketed else "--",
                color=color, lw=1.4, alpha=0.9)
    if c.bracketed and c.lr_opt is not None and c.loss_opt is not None:
        ax.plot([c.lr_opt], [c.loss_opt], "*", color=color, mec="black", mew=0.6, ms=13,
                zorder=5)


def tuning_curves_figure(law: LrLaw) -> Figure:
    """Loss against the learning rate for every cell (one panel each; one curve per batch
    size when batches were tuned): measured losses, diverged runs (x at the top), the saved
    parabola in log lr and its optimum (star); an unbracketed cell has open markers, a
    dashed parabola and no star, with the reason in its title."""
    groups = _cell_groups(law)
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = _new_figure(figsize=(4.4 * ncols + (1.6 if len(groups[0]) > 1 else 0), 3.4 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    cmap = matplotlib.colormaps["viridis"]
    for ax, group in zip(axes, groups, strict=False):
        batches = sorted({c.batch_tokens for c in group if c.batch_tokens is not None})
        for c in group:
            color: Any
            if len(group) > 1 and c.batch_tokens is not None:
                color = cmap(0.05 + 0.8 * batches.index(c.batch_tokens) / max(len(batches) - 1, 1))
                label = f"B = {human_count(c.batch_tokens)} tokens"
            else:
                color, label = OKABE_ITO[0], "runs"
            _curve(ax, c, color, label)
        c0 = group[0]
        title = f"N = {human_count(c0.n_params)}, D = {human_count(c0.n_tokens)}"
        if len(group) == 1:
            title += (f"\nlr* = {c0.lr_opt:.3g}" if c0.bracketed
                      else "\nNOT bracketed: " + c0.message.split(": ", 1)[-1].split(";")[-1].strip())
        ax.set_title(title, fontsize=9, color="black" if all(c.bracketed for c in group)
                     else "#B00000")
        _log_axis(ax, "x", "flops")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("final eval loss (nats/token)")
        ax.grid(True, which="major", alpha=0.25)
        if len(group) > 1:
            _legend_outside(ax)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(f"{law.name}: tuning curves (star: the parabola's optimum)", fontsize=10)
    return fig


def _band(predict, samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray] | None:
    if len(samples) < 2:
        return None
    values = np.stack([predict(row) for row in samples])
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=0)
    return lo, hi


def _lr_panel(ax, law: LrLaw) -> None:
    good = [c for c in law.cells if c.bracketed and c.lr_opt is not None]
    n_all = np.asarray([c.n_params for c in law.cells])
    grid = np.geomspace(n_all.min() / 1.5, n_all.max() * 1.5, 60)
    # one line per (tokens per parameter, batch) among the trusted cells
    combos = sorted({(round(c.n_tokens / c.n_params, 1), c.batch_tokens if law.b_exp else None)
                     for c in good}, key=lambda t: (t[0], t[1] or 0))
    samples = np.asarray(law.samples)
    for i, (tpp, batch) in enumerate(combos):
        color = OKABE_ITO[i % len(OKABE_ITO)]
        b = batch if batch is not None else 1.0

        def predict(row, tpp=tpp, b=b):
            log_c, a, d_exp, b_exp = (tuple(row) + (0.0,))[:4]
            return np.exp(log_c) * grid ** a * (tpp * grid) ** d_exp * b ** b_exp

        label = f"law at D/N = {tpp:g}" + (f", B = {human_count(batch)}" if batch else "")
        point = (math.log(law.coef), law.n_exp, law.d_exp, law.b_exp)
        ax.plot(grid, predict(point), "-", color=color, lw=1.6, label=label)
        band = _band(predict, samples, law.level)
        if band is not None:
            ax.fill_between(grid, *band, color=color, alpha=0.18, lw=0)
        mine = [c for c in good if (round(c.n_tokens / c.n_params, 1),
                                    c.batch_tokens if law.b_exp else None) == (tpp, batch)]
        ax.plot([c.n_params for c in mine], [c.lr_opt for c in mine], "o", color=color,
                mec="black", mew=0.5, ms=6)
    bad = [c for c in law.cells if not c.bracketed and c.lrs]
    for j, c in enumerate(bad):  # at the edge of its grid, open: the optimum lies beyond
        edge = max(c.lrs) if "upwards" in c.message else min(c.lrs)
        ax.plot([c.n_params], [edge], "^" if "upwards" in c.message else "v", color="#777777",
                mfc="white", ms=8, label="not bracketed (optimum beyond the grid)" if j == 0 else None)
    _log_axis(ax, "x", "count")
    _log_axis(ax, "y", "flops")
    ax.set_xlabel("parameters N (total)")
    ax.set_ylabel("optimal peak learning rate lr*")
    lo, hi = law.n_exp_interval
    ax.set_title(f"lr* ~ N^{law.n_exp:.3f} [{lo:.3f}, {hi:.3f}] ({law.level:.0%} band)",
                 fontsize=9)
    ax.grid(True, which="major", alpha=0.25)
    _legend_outside(ax)


def _batch_panel(ax, law: LrLaw, cells: tuple[BatchOptimum, ...]) -> None:
    flops = np.asarray([b.flops for b in cells])
    grid = np.geomspace(flops.min() / 2, flops.max() * 2, 60)
    if law.batch is not None:
        ax.plot(grid, law.batch.coef * grid ** law.batch.exp, "-", color=OKABE_ITO[3], lw=1.6,
                label=f"B*(C) ~ C^{law.batch.exp:.3f}")
        band = _band(lambda row: np.exp(row[0]) * grid ** row[1],
                     np.asarray(law.batch.samples), law.level)
        if band is not None:
            ax.fill_between(grid, *band, color=OKABE_ITO[3], alpha=0.18, lw=0)
    for j, b in enumerate(cells):
        if b.bracketed:
            ax.plot([b.flops], [b.batch_opt], "o", color=OKABE_ITO[3], mec="black", mew=0.5,
                    ms=6, label="cells' B*" if j == 0 else None)
        else:
            edge = max(b.batch_tokens) if "upwards" in b.message else min(b.batch_tokens)
            ax.plot([b.flops], [edge], "^" if "upwards" in b.message else "v", color="#777777",
                    mfc="white", ms=8, label="not bracketed")
    _log_axis(ax, "x", "flops")
    _log_axis(ax, "y", "count")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("optimal batch B* (tokens per step)")
    ax.set_title("batch law" if law.batch is not None else "batch: no cell bracketed",
                 fontsize=9)
    ax.grid(True, which="major", alpha=0.25)
    _legend_outside(ax)


def lr_law_figure(law: LrLaw) -> Figure:
    """The fitted lr*(N, D[, B]) against N at each trusted cell's tokens per parameter (and
    batch), with the bootstrap band and the cells' optima; unbracketed cells as open
    triangles at the edge of their grid, pointing the way to extend. With batch tuning a
    second panel shows B*(C) the same way."""
    batch_cells = batch_cells_of(law)
    fig = _new_figure(figsize=(11.5 if batch_cells else 6.4, 4.0))
    axes = fig.subplots(1, 2 if batch_cells else 1, squeeze=False).ravel()
    _lr_panel(axes[0], law)
    if batch_cells:
        _batch_panel(axes[1], law, batch_cells)
    fig.suptitle(f"{law.name}: fitted law", fontsize=10)
    return fig


def law_lines(law: LrLaw) -> list[str]:
    """The law in words, with its intervals."""
    lo, hi = law.n_exp_interval
    dlo, dhi = law.d_exp_interval
    text = (f"lr*(N, D{', B' if law.b_exp else ''}) = {law.coef:.4g} N^{law.n_exp:.3f} "
            f"[{lo:.3f}, {hi:.3f}] D^{law.d_exp:.3f} [{dlo:.3f}, {dhi:.3f}]")
    if law.b_exp:
        blo, bhi = law.b_exp_interval
        text += f" B^{law.b_exp:.3f} [{blo:.3f}, {bhi:.3f}] (B: tokens per step)"
    out = [text + f"; {law.level:.0%} residual-bootstrap intervals, {law.n_boot} resamples."]
    if law.batch is not None:
        qlo, qhi = law.batch.exp_interval
        out.append(f"B*(C) = {law.batch.coef:.4g} C^{law.batch.exp:.3f} [{qlo:.3f}, {qhi:.3f}] "
                   "tokens per step.")
    return out


def tune_figures(fig_dir: Path, laws: list[tuple[Path, LrLaw]]) -> list[tuple[Path, str, str]]:
    """The report's tuning figures, saved as PNG: (path, relative path, caption)."""
    out = []
    for path, law in laws:
        sweep = path.parent.name
        for name, make, caption in (
                (f"tune_curves_{sweep}", tuning_curves_figure,
                 f"Tuning curves of {sweep}: final loss against the learning rate per cell, with "
                 "the fitted parabola in log lr and its optimum (star); open markers and a "
                 "dashed parabola: not bracketed; x: diverged."),
                (f"tune_law_{sweep}", lr_law_figure,
                 f"The lr law of {sweep}: lr* against N with its bootstrap band and the cells' "
                 "optima (open triangles: unbracketed cells, at the edge of their grid)"
                 + ("; right: B*(C)." if batch_cells_of(law) else "."))):
            target = fig_dir / f"{name}.png"
            out.append((save_figure(make(law), target), f"figures/{name}.png", caption))
    return out


def cell_rows(law: LrLaw) -> list[list[str]]:
    """One row per tuning (sub-)cell: N, D, B, the lr grid, lr*, the loss there, trusted."""
    rows = []
    for c in law.cells:
        rows.append([human_count(c.n_params), human_count(c.n_tokens),
                     human_count(c.batch_tokens) if c.batch_tokens else "-",
                     f"{min(c.lrs):.3g} - {max(c.lrs):.3g}" if c.lrs else "-",
                     f"{c.lr_opt:.3g}" if c.lr_opt is not None else "-",
                     f"{c.loss_opt:.4f}" if c.loss_opt is not None else "-",
                     "yes" if c.bracketed else "NO: " + c.message.split(": ", 1)[-1]])
    return rows


__all__ = ["cell_rows", "find_tune_laws", "law_lines", "lr_law_figure", "tune_figures",
           "tuning_curves_figure"]
