"""Figures of a scaling study: pure functions from DataFrames and a FitDocument to Figures.

Nothing here fits anything: curves are the formulas of the saved fit's results (a
FitDocument read from `fit.json`), points come from `analysis.load`. Figures are built on `matplotlib.figure.Figure` directly (no pyplot
state, Agg rendering), and `save_figure` writes a PNG atomically.

Readability rules applied everywhere: log axes for N, D and FLOPs with human-readable tick
labels (10K, 1M, 1B for counts; 1e18 for FLOPs), units in every axis label, the N used
(total or non-embedding) named on the axis, legends outside the data area, and colours
from the Okabe-Ito palette or the perceptually uniform, colour-blind-safe viridis map.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patheffects, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.approach2 import IsoFlopMinimum
from analysis.approach3 import ParametricLaw
from analysis.fitdoc import FitDocument
from scaling.fileio import atomic_write_bytes

# Okabe & Ito (2008), "Color Universal Design": distinguishable under all common
# colour-vision deficiencies.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
             "#F0E442")
APPROACH_STYLE = {
    "approach1": ("Approach 1 (envelope)", OKABE_ITO[0]),
    "approach2": ("Approach 2 (IsoFLOP)", OKABE_ITO[1]),
    "approach3": ("Approach 3 (parametric)", OKABE_ITO[2]),
    "vpnls": ("VPNLS (check)", OKABE_ITO[4]),
}
# Hoffmann et al. 2022, eq. 10 (Approach 3 as published).
HOFFMANN_LAW = ParametricLaw(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
KAPLAN_A = 0.73  # Kaplan et al. 2020: N_opt proportional to C^0.73 (non-embedding N)
CHINCHILLA_A = 0.50  # Hoffmann et al. 2022, Approach 1


# --------------------------------------------------------------------------- ticks


def human_count(x: float, _pos=None) -> str:
    """10000 -> '10K', 2.5e9 -> '2.5B': counts of parameters and tokens."""
    if x <= 0 or not math.isfinite(x):
        return ""
    value, suffix = x, ""
    for scale, name in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= scale * 0.9995:  # 999.9K reads better as 1M
            value, suffix = x / scale, name
            break
    return f"{value:.3g}{suffix}"


def human_flops(x: float, _pos=None) -> str:
    """1e18 -> '1e18', 3e18 -> '3e18'."""
    if x <= 0 or not math.isfinite(x):
        return ""
    exponent = math.floor(math.log10(x) + 1e-9)
    mantissa = float(f"{x / 10**exponent:.3g}")
    if mantissa >= 10:  # 9.996e18 rounds up to 10e18
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def _new_figure(**kwargs) -> Figure:
    # An Agg canvas of its own: no pyplot, no global backend switch, no figure registry.
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _log_axis(ax, which: str, kind: str) -> None:
    """Log scale with readable labels; adds 2x and 5x labels when under two decades."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = (ax.get_xlim() if which == "x" else ax.get_ylim())
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 3.0
    fmt = human_count if kind == "count" else human_flops
    if decades < 2.2:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        axis.set_major_locator(ticker.LogLocator(base=10, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(fmt))
    axis.set_minor_formatter(ticker.NullFormatter())


def _n_label(fit: FitDocument | None) -> str:
    return "non-embedding" if fit is not None and fit.params_kind == "non_embedding" else "total"


def _budget_colors(budgets) -> dict:
    budgets = sorted(budgets)
    cmap = matplotlib.colormaps["viridis"]
    if len(budgets) == 1:
        return {budgets[0]: cmap(0.35)}
    # Stop before viridis' pale yellow end, which vanishes on white.
    return {b: cmap(0.05 + 0.8 * i / (len(budgets) - 1)) for i, b in enumerate(budgets)}


def _params_column(points, fit: FitDocument | None) -> str:
    if fit is not None and fit.params_kind == "non_embedding" and "params_non_embedding" in points:
        if points["params_non_embedding"].notna().all():
            return "params_non_embedding"
    return "params"


def _minima(fit: FitDocument | None) -> tuple[IsoFlopMinimum, ...]:
    a2 = None if fit is None else fit.fitted().get("approach2")
    return () if a2 is None else a2.minima


def _approach_title(name: str | None) -> str:
    return {"approach3": "Approach 3", "vpnls": "VPNLS"}.get(name or "", str(name))


def _clip_outliers(ax, values: np.ndarray) -> None:
    """Keep a few far-off losses from flattening every curve: cap the y-axis just above the
    bulk of the points and say, on the plot, how many runs lie above it."""
    values = values[np.isfinite(values)]
    if len(values) < 20:
        return
    lo, hi = np.quantile(values, [0.02, 0.98])
    top = hi + 0.35 * (hi - lo)
    above = values[values > top]
    if len(above) == 0:
        return
    ax.set_ylim(top=top)
    ax.text(0.99, 0.985, f"{len(above)} run{'s' if len(above) > 1 else ''} above, "
            f"up to {above.max():.3g}", transform=ax.transAxes, ha="right", va="top",
            fontsize=8, color="#444444",
            bbox={"facecolor": "white", "edgecolor": "#bbbbbb", "pad": 2})


def _spread_out(values, min_decades: float = 0.45) -> set:
    """A subset of sorted positive values at least `min_decades` apart (labels that fit)."""
    kept, last = set(), -math.inf
    for v in sorted(values):
        if math.log10(v) - last >= min_decades:
            kept.add(v)
            last = math.log10(v)
    return kept


def _legend_outside(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, frameon=False, fontsize=8, **kwargs)


# --------------------------------------------------------------------------- figures


def isoflop_figure(points, fit: FitDocument | None = None) -> Figure:
    """Final loss against N, one colour per budget; the saved parabolas and their minima
    (filled star: bracketed by the sampled sizes; open star: not bracketed)."""
    fig = _new_figure(figsize=(9.0, 5.2))
    ax = fig.add_subplot()
    col = _params_column(points, fit)
    budgets = sorted(points["budget"].dropna().unique())
    palette = _budget_colors(budgets)
    loose = points[points["budget"].isna()]
    if len(loose):
        ax.scatter(loose[col], loose["loss"], s=14, color="#999999", zorder=2,
                   label=f"no budget level ({len(loose)} runs)")
    minima = {round(math.log10(m.budget), 2): m for m in _minima(fit)}
    law_name, law = fit.parametric() if fit is not None else (None, None)
    drawn = []
    for budget in budgets:
        group = points[points["budget"] == budget].sort_values(col)
        color = palette[budget]
        ax.scatter(group[col], group["loss"], s=22, color=color, zorder=3,
                   label=f"{human_flops(budget)} FLOPs ({len(group)} runs)")
        n_grid = np.geomspace(group[col].min() / 1.3, group[col].max() * 1.3, 200)
        minimum = minima.get(round(math.log10(budget), 2))
        curve = minimum.loss(n_grid) if minimum else None
        drawn.append(curve is not None)
        if curve is not None:
            ax.plot(n_grid, curve, color=color, lw=1.4, zorder=2)
        elif law is not None:
            ax.plot(n_grid, law.predict(n_grid, budget / (6 * n_grid)), color=color,
                    lw=1.0, ls="--", zorder=2)
            if not minimum:
                ax.scatter([law.params_opt(budget)], [law.loss_opt(budget)], marker="D", s=40,
                           zorder=4, facecolors=color, edgecolors="black", linewidths=0.8)
        if minimum:
            ax.scatter([minimum.params_opt], [minimum.loss_opt], marker="*",
                       s=170 if len(budgets) <= 8 else 90, zorder=4, edgecolors="black",
                       linewidths=0.8, facecolors=color if minimum.bracketed else "white")
    _isoflop_legend(ax, minima, drawn, law_name if law is not None else None)
    _clip_outliers(ax, points["loss"].to_numpy(float))
    ax.set_xlabel(f"Parameters N ({_n_label(fit)}, count)")
    ax.set_ylabel("Final loss (nats / token)")
    ax.set_title("IsoFLOP profiles: loss against model size at fixed compute")
    ax.grid(True, which="major", alpha=0.3)
    _log_axis(ax, "x", "count")
    _legend_outside(ax, title="Budget")
    return fig


def _isoflop_legend(ax, minima: dict, drawn: list[bool], law_name: str | None) -> None:
    """Proxy entries explaining the marks once, not per budget."""
    if minima:
        ax.scatter([], [], marker="*", s=120, facecolors="grey", edgecolors="black",
                   label="IsoFLOP minimum (bracketed)")
    elif law_name is not None:
        ax.scatter([], [], marker="D", s=40, facecolors="grey", edgecolors="black",
                   label=f"minimum of the {_approach_title(law_name)} law")
    if any(not m.bracketed for m in minima.values()):
        ax.scatter([], [], marker="*", s=120, facecolors="white", edgecolors="black",
                   label="minimum NOT bracketed")
    if any(drawn):
        ax.plot([], [], color="grey", lw=1.4, label="parabola in log N (Approach 2)")
    if law_name is not None and not all(drawn):
        ax.plot([], [], color="grey", lw=1.0, ls="--",
                label=f"{_approach_title(law_name)} law at fixed C")


def _budget_range(fit: FitDocument | None, points=None,
                  extra: float | None = None) -> tuple[float, float]:
    budgets = []
    if points is not None and "budget" in points:
        budgets += [float(b) for b in points["budget"].unique() if _pos(b)]
    budgets += [m.budget for m in _minima(fit)]
    if extra is not None and _pos(extra):
        budgets.append(float(extra))
    if not budgets:
        return 1e18, 1e24
    return min(budgets) / 3.0, max(budgets) * 3.0


def _frontier_lines(ax_n, ax_d, fit: FitDocument, grid: np.ndarray):
    """Each approach's N*(C), D*(C) with its bootstrap band; returns the anchor (C, N*, D*)
    of Approach 3 (else of the first approach) for the reference slopes."""
    anchor = None
    for approach, result in fit.fitted().items():
        label, color = APPROACH_STYLE[approach]
        n, d = result.params_opt(grid), result.tokens_opt(grid)
        if not np.all(np.isfinite(n)):
            continue
        ci = fit.interval(approach, "a")
        tag = f"{label}: a={float(result.a):.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        ax_n.plot(grid, n, color=color, lw=2, label=tag)
        ax_d.plot(grid, d, color=color, lw=2, label=label)
        samples = fit.sample_laws(approach)
        if samples is not None:
            law = samples[0].column()
            tail = (1 - fit.level(approach)) / 2 * 100
            with np.errstate(invalid="ignore"):
                for ax, values in ((ax_n, law.params_opt(grid)), (ax_d, law.tokens_opt(grid))):
                    q = np.nanpercentile(values, [tail, 100 - tail], axis=0)
                    ax.fill_between(grid, q[0], q[1], color=color, alpha=0.18, lw=0)
        if anchor is None or approach == "approach3":
            mid = len(grid) // 2
            anchor = (grid[mid], n[mid], d[mid])
    return anchor


def _minima_marks(ax_n, ax_d, minima) -> None:
    bracketed = [m for m in minima if m.bracketed]
    loose = [m for m in minima if not m.bracketed]
    for ax, key in ((ax_n, "params_opt"), (ax_d, "tokens_opt")):
        ax.scatter([m.budget for m in bracketed], [getattr(m, key) for m in bracketed],
                   color=OKABE_ITO[1], edgecolors="black", zorder=4, s=30, label="IsoFLOP minima")
        if loose:
            ax.scatter([m.budget for m in loose], [getattr(m, key) for m in loose],
                       facecolors="white", edgecolors=OKABE_ITO[1], zorder=4, s=30,
                       label="IsoFLOP minima (not bracketed)")


def _reference_lines(ax_n, ax_d, grid: np.ndarray, anchor) -> None:
    """Hoffmann et al.'s published law, and Chinchilla's and Kaplan's slopes through ours."""
    for ax, values in ((ax_n, HOFFMANN_LAW.params_opt(grid)), (ax_d, HOFFMANN_LAW.tokens_opt(grid))):
        ax.plot(grid, values, color="grey", ls=":", lw=1.5,
                label="Hoffmann et al. 2022 (Approach 3)")
    if anchor is None:
        return
    c0, n0, d0 = anchor
    for exponent, style, name in ((CHINCHILLA_A, "-.", "Chinchilla"),
                                  (KAPLAN_A, "--", "Kaplan et al. 2020")):
        ax_n.plot(grid, n0 * (grid / c0) ** exponent, color="black", ls=style, lw=0.9,
                  alpha=0.7, label=f"{name} slopes (N ~ C^{exponent:.2f}, "
                  f"D ~ C^{1 - exponent:.2f}), through our fit")
        ax_d.plot(grid, d0 * (grid / c0) ** (1 - exponent), color="black", ls=style, lw=0.9,
                  alpha=0.7)


def frontier_figure(fit: FitDocument, points=None, budget: float | None = None) -> Figure:
    """N*(C) and D*(C) of every approach with bootstrap bands, the Approach 2 minima, and
    Chinchilla / Kaplan references; `budget` marks the recommendation's budget."""
    fig = _new_figure(figsize=(12.0, 5.0))
    ax_n, ax_d = fig.subplots(1, 2)
    lo, hi = _budget_range(fit, points, budget)
    grid = np.geomspace(lo, hi, 200)
    anchor = _frontier_lines(ax_n, ax_d, fit, grid)
    if _minima(fit):
        _minima_marks(ax_n, ax_d, _minima(fit))
    _reference_lines(ax_n, ax_d, grid, anchor)
    for ax in (ax_n, ax_d) if budget is not None and _pos(budget) else ():
        ax.axvline(budget, color=OKABE_ITO[3], lw=1, ls="--")
        ax.text(budget, 0.02, " target", transform=ax.get_xaxis_transform(),
                color=OKABE_ITO[3], fontsize=8, rotation=90, va="bottom", ha="right")
    for ax, what, unit in ((ax_n, "Optimal parameters N*", f"{_n_label(fit)}, count"),
                           (ax_d, "Optimal tokens D*", "count")):
        ax.set_xlim(lo, hi)
        ax.set_xlabel(f"Training compute C (FLOPs, {fit.convention})")
        ax.set_ylabel(f"{what} ({unit})")
        ax.grid(True, which="major", alpha=0.3)
        _log_axis(ax, "x", "flops")
        ax.set_yscale("log")
        _log_axis(ax, "y", "count")
    ax_n.set_title("Compute-optimal model size")
    ax_d.set_title("Compute-optimal training tokens")
    handles, labels = ax_n.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def landscape_figure(fit: FitDocument, points=None, approach: str | None = None,
                     budget: float | None = None) -> Figure:
    """Contours of the fitted L(N, D) with the efficient frontier and IsoFLOP lines."""
    name, law = fit.parametric(approach)
    fig = _new_figure(figsize=(8.5, 6.5))
    ax = fig.add_subplot()
    if law is None:
        ax.text(0.5, 0.5, "no parametric law in the fit", ha="center", va="center")
        ax.set_axis_off()
        return fig
    lo, hi = _budget_range(fit, points, budget)
    front = np.geomspace(lo, hi, 100)
    n_front, d_front = law.params_opt(front), law.tokens_opt(front)
    col = _params_column(points, fit) if points is not None else "params"
    ns = list(n_front)
    ds = list(d_front)
    if points is not None:
        ns += list(points[col])
        ds += list(points["tokens"])
    n_lo, n_hi = min(ns) / 3, max(ns) * 3
    d_lo, d_hi = min(ds) / 3, max(ds) * 3
    n_grid = np.geomspace(n_lo, n_hi, 300)
    d_grid = np.geomspace(d_lo, d_hi, 300)
    nn, dd = np.meshgrid(n_grid, d_grid)
    loss = law.predict(nn, dd)
    levels = ticker.MaxNLocator(nbins=14).tick_values(loss.min(), np.quantile(loss, 0.97))
    filled = ax.contourf(nn, dd, loss, levels=levels, cmap="viridis_r", alpha=0.85,
                         extend="max")
    lines = ax.contour(nn, dd, loss, levels=levels[::2], colors="white", linewidths=0.5)
    ax.clabel(lines, fmt="%.2f", fontsize=7, inline=True)
    cbar = fig.colorbar(filled, ax=ax, pad=0.01)
    cbar.set_label("Predicted loss (nats / token)")
    ax.plot(n_front, d_front, color=OKABE_ITO[3], lw=2.2, label="efficient frontier N*(C), D*(C)")
    budgets = (sorted(points["budget"].dropna().unique())
               if points is not None and "budget" in points else [])
    if budget is not None and _pos(budget):
        budgets = list(budgets) + [float(budget)]
    labelled = _spread_out(budgets[:-1] if budget is not None and _pos(budget) else budgets)
    for i, c in enumerate(budgets):
        d_line = c / (6 * n_grid)
        inside = (d_line > d_lo) & (d_line < d_hi)
        if not inside.any():
            continue
        target = budget is not None and i == len(budgets) - 1
        ax.plot(n_grid[inside], d_line[inside], color="white" if not target else OKABE_ITO[1],
                lw=0.9 if not target else 1.6, ls="--",
                label=("IsoFLOP lines C = 6ND" if i == 0 else None) if not target
                else "target budget")
        if not target and c not in labelled:
            continue
        # Label each line where it meets the frontier: labels then sit along one diagonal
        # instead of piling up at the axes' edge.
        n_at, d_at = law.params_opt(c), law.tokens_opt(c)
        if not (n_lo < n_at < n_hi and d_lo < d_at < d_hi):
            j = np.flatnonzero(inside)[-1]
            n_at, d_at = n_grid[j], d_line[j]
        ax.annotate(human_flops(c), (n_at, d_at), fontsize=7, color="white"
                    if not target else OKABE_ITO[1], xytext=(4, 3), textcoords="offset points",
                    ha="left", va="bottom", fontweight="bold",
                    path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    if points is not None:
        ax.scatter(points[col], points["tokens"], s=12, color="black", edgecolors="white",
                   linewidths=0.4, zorder=3, label="runs")
    ax.set_xlim(n_lo, n_hi)
    ax.set_ylim(d_lo, d_hi)
    ax.set_xlabel(f"Parameters N ({_n_label(fit)}, count)")
    ax.set_ylabel("Training tokens D (count)")
    ax.set_title(f"Loss landscape of the fitted law, {_approach_title(name)}")
    _log_axis(ax, "x", "count")
    _log_axis(ax, "y", "count")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    return fig


def curves_figure(curves, x: str = "flops") -> Figure:
    """Training curves (loss against FLOPs or tokens), coloured by model size, with the
    lower envelope that Approach 1 reads its minima from."""
    fig = _new_figure(figsize=(9.0, 5.2))
    ax = fig.add_subplot()
    curves = curves[(curves[x] > 0) & np.isfinite(curves["loss"])]
    sizes = curves.groupby("run")["params"].first()
    norm = mcolors.LogNorm(vmin=sizes.min(), vmax=max(sizes.max(), sizes.min() * 1.001))
    cmap = matplotlib.colormaps["viridis"]
    for run, size in sizes.sort_values().items():
        group = curves[curves["run"] == run].sort_values(x)
        ax.plot(group[x], group["loss"], color=cmap(norm(size) * 0.9), lw=1.0, alpha=0.85)
    # Approach 1's envelope: at each compute, the lowest loss any run reached there
    # (interpolated in log compute within each run's own range).
    x_grid = np.geomspace(curves[x].min(), curves[x].max(), 400)
    per_run = []
    for _, group in curves.groupby("run"):
        group = group.sort_values(x)
        per_run.append(np.interp(np.log(x_grid), np.log(group[x].to_numpy(float)),
                                 group["loss"].to_numpy(float), left=np.nan, right=np.nan))
    with np.errstate(all="ignore"):
        envelope = np.nanmin(np.vstack(per_run), axis=0)
    ax.plot(x_grid, envelope, color="black", lw=1.6, ls="--",
            label="envelope: lowest loss at each compute")
    finals = curves.sort_values(x).groupby("run")["loss"].last()
    top = finals.max() + 0.6 * (finals.max() - finals.min()) + 0.05 * abs(finals.max())
    ax.set_ylim(max(curves["loss"].min() - 0.05 * abs(curves["loss"].min()), 0),
                min(top, curves["loss"].max() * 1.02))
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(
        cmap(np.linspace(0, 0.9, 256))))
    cbar = fig.colorbar(sm, ax=ax, pad=0.01)
    cbar.set_label("Parameters N (count)")
    if math.log10(norm.vmax / norm.vmin) < 2.2:
        cbar.ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    cbar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(human_count))
    cbar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xscale("log")
    _log_axis(ax, "x", "flops" if x == "flops" else "count")
    ax.set_xlabel("Training compute (FLOPs)" if x == "flops" else "Training tokens (count)")
    ax.set_ylabel("Training loss (nats / token)")
    ax.set_title(f"Training curves of {len(sizes)} runs")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return fig


def residuals_figure(points, fit: FitDocument, approach: str | None = None) -> Figure:
    """Log-loss residuals of the parametric fit against N (coloured by budget), and their
    distribution; the Huber transition (1e-3) is shaded."""
    name, law = fit.parametric(approach)
    fig = _new_figure(figsize=(11.0, 4.6))
    ax, ax_hist = fig.subplots(1, 2, width_ratios=(2.2, 1))
    if law is None:
        ax.text(0.5, 0.5, "no parametric law in the fit", ha="center", va="center")
        return fig
    col = _params_column(points, fit)
    predicted = law.predict(points[col].to_numpy(float), points["tokens"].to_numpy(float))
    residual = np.log(points["loss"].to_numpy(float)) - np.log(predicted)
    budgets = sorted(points["budget"].dropna().unique())
    palette = _budget_colors(budgets)
    loose = points["budget"].isna().to_numpy()
    if loose.any():
        ax.scatter(points[col][loose], residual[loose], s=12, color="#999999",
                   label="no budget level")
    for budget in budgets:
        mask = (points["budget"] == budget).to_numpy()
        ax.scatter(points[col][mask], residual[mask], s=18, color=palette[budget],
                   label=human_flops(budget))
    ax.axhline(0, color="black", lw=0.8)
    ax.axhspan(-1e-3, 1e-3, color="grey", alpha=0.2, lw=0, label="|r| < 1e-3 (Huber delta)")
    _log_axis(ax, "x", "count")
    ax.set_xlabel(f"Parameters N ({_n_label(fit)}, count)")
    ax.set_ylabel("Residual log L - log L_fit (nats)")
    ax.set_title(f"Residuals of the fitted law, {_approach_title(name)}")
    ax.grid(True, alpha=0.3)
    _legend_outside(ax, title="Budget (FLOPs)")
    ax_hist.hist(residual, bins=max(10, min(40, len(residual) // 4)), color=OKABE_ITO[0],
                 alpha=0.85)
    ax_hist.axvline(0, color="black", lw=0.8)
    rms = float(np.sqrt(np.mean(residual**2)))
    ax_hist.set_title(f"{len(residual)} points, RMS {rms:.4f}")
    ax_hist.set_xlabel("Residual (nats)")
    ax_hist.set_ylabel("Points (count)")
    return fig


def rollout_figure(rollout: dict) -> Figure:
    """Rolling-origin validation (fit.json's "rollout"): every predicted run's forecast
    against its observed loss, with its prediction interval, coloured by origin; the diagonal
    is a perfect forecast."""
    fig = _new_figure(figsize=(6.4, 5.4))
    ax = fig.subplots()
    steps = rollout.get("steps") or []
    cmap = matplotlib.colormaps["viridis"]
    lo_all, hi_all = math.inf, -math.inf
    for i, step in enumerate(steps):
        rows = step.get("predicted") or []
        if not rows:
            continue
        obs = np.array([r["observed"] for r in rows])
        pred = np.array([r["predicted"] for r in rows])
        pi = np.array([r["pi"] for r in rows])
        color = cmap(i / max(len(steps) - 1, 1))
        ax.errorbar(obs, pred, yerr=[pred - pi[:, 0], pi[:, 1] - pred], fmt="o", ms=4,
                    color=color, alpha=0.8, lw=0.8,
                    label=f"predicting {human_flops(step['target'])}"
                    if rollout.get("mode") == "budgets" else f"N >= {human_count(step['target'])}")
        lo_all = min(lo_all, obs.min(), pi[:, 0].min())
        hi_all = max(hi_all, obs.max(), pi[:, 1].max())
    if math.isfinite(lo_all):
        ax.plot([lo_all, hi_all], [lo_all, hi_all], color="black", lw=0.8, label="forecast = observed")
    level = rollout.get("level", 0.8)
    ax.set_xlabel("Observed loss (nats/token)")
    ax.set_ylabel(f"Forecast loss, {level:.0%} prediction interval (nats/token)")
    ax.set_title("Rolling-origin validation of the parametric law")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- saving


def save_figure(fig: Figure, path: str | Path, dpi: int = 130) -> Path:
    """Render to PNG in memory, then write atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _pos(x) -> bool:
    return (isinstance(x, int | float | np.floating) and not isinstance(x, bool)
            and math.isfinite(x) and x > 0)
