"""The figure and the report section of `scaling compare`.

`compare_figure(pair, a, b)`: left, the effective compute multiplier of B over A against
compute with its bootstrap band (1 dashed: no difference; swept budgets marked); right, both
compute-optimal frontiers L*(C) with their bands. `write_compare_report(dir, ...)` writes one
figure per pair and compare.md / compare.html, rendered by `analysis.report`'s document
renderers so they look like the study report.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.compare import Contender, PairComparison, interval, multiplier, paired_samples
from analysis.plots import OKABE_ITO, human_flops, save_figure
from analysis.report import Document, fmt_ci, fmt_num, render_html, render_markdown
from scaling.fileio import atomic_write_text


def _grid(pair: PairComparison, n: int = 120) -> np.ndarray:
    flops = [b.flops for b in pair.budgets] + ([pair.target.flops] if pair.target else [])
    return np.geomspace(min(flops) / 3, max(flops) * 3, n)


def _band(samples_SxC: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper band over the samples at every grid point (NaN where infinite)."""
    lo, hi = np.array([interval(col, level) for col in np.asarray(samples_SxC).T]).T
    return np.where(np.isfinite(lo), lo, np.nan), np.where(np.isfinite(hi), hi, np.nan)


def compare_figure(pair: PairComparison, a: Contender, b: Contender) -> Figure:
    fig = Figure(layout="constrained", figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_m, ax_l = fig.subplots(1, 2)
    grid = _grid(pair)
    point = multiplier(a.law, b.law, grid)
    ax_m.plot(grid, point, color=OKABE_ITO[0], label="point fit")
    paired = paired_samples(a, b)
    if paired is not None:
        sa, sb = paired
        lo, hi = _band(multiplier(sa.column(), sb.column(), grid), pair.level)
        ax_m.fill_between(grid, lo, hi, color=OKABE_ITO[0], alpha=0.2,
                          label=f"{pair.level:.0%} bootstrap band")
    for row in pair.budgets:
        ax_m.plot(row.flops, row.multiplier, "o", color=OKABE_ITO[0], ms=4)
    if pair.target is not None and math.isfinite(pair.target.multiplier):
        ax_m.plot(pair.target.flops, pair.target.multiplier, "*", color=OKABE_ITO[3], ms=10,
                  label="target budget")
    ax_m.axhline(1.0, color="0.4", ls="--", lw=1)
    ax_m.set_xscale("log")
    ax_m.set_yscale("log")
    ax_m.xaxis.set_major_formatter(ticker.FuncFormatter(human_flops))
    ax_m.set_xlabel("compute C (FLOPs)")
    ax_m.set_ylabel(f"compute multiplier of {b.name} over {a.name}")
    ax_m.set_title(f"{a.name} needs this x C to match {b.name} at C", fontsize=10)
    ax_m.legend(fontsize=8)
    for color, side in zip((OKABE_ITO[1], OKABE_ITO[2]), (a, b), strict=True):
        ax_l.plot(grid, side.law.loss_opt(grid), color=color, label=side.name)
        if side.samples is not None:
            lo, hi = _band(side.samples.column().loss_opt(grid), pair.level)
            ax_l.fill_between(grid, lo, hi, color=color, alpha=0.2)
        for c in side.budgets:
            ax_l.plot(c, side.law.loss_opt(c), "o", color=color, ms=4)
    for c in pair.crossover_flops:
        if grid[0] <= c <= grid[-1]:
            ax_l.axvline(c, color="0.4", ls=":", lw=1, label=f"crossover {human_flops(c)}")
    ax_l.set_xscale("log")
    ax_l.xaxis.set_major_formatter(ticker.FuncFormatter(human_flops))
    ax_l.set_xlabel("compute C (FLOPs)")
    ax_l.set_ylabel("compute-optimal loss L*(C) (nats/token)")
    ax_l.set_title("compute-optimal frontiers (Approach 3)", fontsize=10)
    ax_l.legend(fontsize=8)
    return fig


def pair_rows(pair: PairComparison) -> list[list[str]]:
    rows = [*pair.budgets, *([pair.target] if pair.target else [])]
    return [[("target " if r is pair.target else "") + human_flops(r.flops),
             fmt_num(r.loss_opt_a), fmt_num(r.loss_opt_b),
             "never" if math.isinf(r.multiplier) else fmt_ci(r.multiplier, r.multiplier_ci),
             "-" if r.wallclock_multiplier is None
             else fmt_ci(r.wallclock_multiplier, r.wallclock_multiplier_ci)] for r in rows]


def crossover_text(pair: PairComparison) -> str:
    lo, hi = pair.crossover_range
    where = f"between {human_flops(lo)} and {human_flops(hi)} FLOPs"
    share = ("" if pair.crossover_fraction is None
             else f"; {pair.crossover_fraction:.0%} of bootstrap pairs cross in range")
    ci = (f" (interval over those that cross: {human_flops(pair.crossover_ci[0])} to "
          f"{human_flops(pair.crossover_ci[1])})" if pair.crossover_ci else "")
    if not pair.crossover_flops:
        return f"The frontiers do not cross {where}{share}{ci}."
    at = ", ".join(human_flops(c) for c in pair.crossover_flops)
    return f"The frontiers cross at {at} FLOPs ({where}){share}{ci}."


HEADER = ["budget C", "L*_A(C)", "L*_B(C)", "multiplier [CI]", "wall-clock multiplier [CI]"]


def write_compare_report(out_dir: str | Path, pairs: list[PairComparison],
                         contenders: list[Contender]) -> Path:
    """compare.md, compare.html and compare_<A>_vs_<B>.png in `out_dir`; returns compare.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_name = {c.name: c for c in contenders}
    doc = Document("Ladder comparison")
    doc.p("Effective compute multiplier of B over A at C: the compute A's compute-optimal "
          "frontier needs to reach B's compute-optimal loss at C, divided by C (above 1: B is "
          "better). Intervals: percentile bootstrap, each ladder resampled within budgets.")
    doc.table(["ladder", "source", "points", "E", "alpha", "beta"],
              [[c.name, c.source, str(c.n_points), fmt_num(c.law.E), fmt_num(c.law.alpha),
                fmt_num(c.law.beta)] for c in contenders])
    for pair in pairs:
        doc.h(f"A = {pair.a}, B = {pair.b}")
        doc.table(HEADER, pair_rows(pair))
        doc.p(crossover_text(pair))
        png = out_dir / f"compare_{pair.a}_vs_{pair.b}.png"
        save_figure(compare_figure(pair, by_name[pair.a], by_name[pair.b]), png)
        doc.figure(png, png.name, f"{pair.b} over {pair.a}: compute multiplier and frontiers")
    atomic_write_text(out_dir / "compare.html", render_html(doc))
    md = out_dir / "compare.md"
    atomic_write_text(md, render_markdown(doc))
    return md


__all__ = ["compare_figure", "crossover_text", "pair_rows", "write_compare_report"]
