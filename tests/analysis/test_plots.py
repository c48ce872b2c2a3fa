"""analysis.plots: what the figures draw, how they read, and how they are saved."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from analysis import plots
from analysis.approach3 import ParametricLaw
from analysis.fitdoc import FitDocument

LAW_PARAMS = dict(A=406.4, B=410.7, E=1.69, alpha=0.34, beta=0.28)
LAW = ParametricLaw(**LAW_PARAMS)
BUDGETS = (1e17, 1e18, 1e19)


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    rows = []
    for budget in BUDGETS:
        n_opt = LAW.params_opt(budget)
        for n in n_opt * np.geomspace(0.2, 5, 6):
            d = budget / (6 * n)
            loss = LAW.predict(n, d) * np.exp(0.004 * rng.standard_normal())
            rows.append(dict(run=f"b{budget:.0e}-n{n:.3g}", params=n,
                             params_non_embedding=0.8 * n, tokens=d, flops=budget,
                             budget=budget, loss=loss))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fit(points):
    rng = np.random.default_rng(1)
    minima = []
    for budget in BUDGETS:
        g = points[points["budget"] == budget]
        c = np.polyfit(np.log10(g["params"]), g["loss"], 2)
        x = -c[1] / (2 * c[0])
        minima.append(dict(budget=budget, params_opt=10**x, tokens_opt=budget / (6 * 10**x),
                           loss_opt=float(np.polyval(c, x)), bracketed=budget != 1e19,
                           coeffs=[float(v) for v in c]))
    samples = {k: list(v * (1 + 0.02 * rng.standard_normal(200))) for k, v in LAW_PARAMS.items()}
    return FitDocument.from_dict({
        "convention": "6N", "params_kind": "total",
        "approach3": dict(LAW_PARAMS, a=0.4516, b=0.5484,
                          bootstrap={"level": 0.8, "n": 200, "seed": 1, "samples": samples}),
        "approach2": dict(a=0.47, b=0.53, k_params=0.4, k_tokens=0.42, minima=minima)})


def _tick_texts(fig):
    fig.canvas.draw()
    texts = []
    for ax in fig.axes:
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    return [t for t in texts if t]


@pytest.mark.parametrize("value,text", [
    (1e4, "10K"), (1e6, "1M"), (2.5e9, "2.5B"), (1.2e12, "1.2T"), (500, "500"),
    (999_999, "1M"), (0, ""),
])
def test_human_count(value, text):
    assert plots.human_count(value) == text


@pytest.mark.parametrize("value,text", [(1e18, "1e18"), (3e18, "3e18"), (1e-3, "1e-3")])
def test_human_flops(value, text):
    assert plots.human_flops(value) == text


def test_isoflop_figure_draws_every_budget_its_parabola_and_marks_unbracketed(points, fit):
    fig = plots.isoflop_figure(points, fit)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "Parameters N (total" in ax.get_xlabel() and "nats" in ax.get_ylabel()
    scatters = [c for c in ax.collections if len(c.get_offsets()) == 6]
    assert len(scatters) == len(BUDGETS)
    # The parabola drawn for a budget is the saved one, evaluated in log10 N.
    curve = ax.lines[0]
    x, y = curve.get_data()
    c = fit.approaches["approach2"].minima[0].coeffs
    assert np.allclose(y, np.polyval(c, np.log10(x)))
    labels = ax.get_legend().get_texts()
    assert any("NOT bracketed" in t.get_text() for t in labels)
    assert any("1e17 FLOPs" in t.get_text() for t in labels)
    # Human-readable ticks, never 1e+06 style or mathtext powers.
    texts = _tick_texts(fig)
    assert any(t.endswith(("M", "B")) for t in texts)
    assert not any("e+" in t or "^" in t for t in texts)


def test_legend_does_not_cover_the_data(points, fit):
    fig = plots.isoflop_figure(points, fit)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    axes_box = ax.get_window_extent()
    assert legend.x0 >= axes_box.x1 - 1  # entirely to the right of the plotting area


def test_isoflop_without_parabolas_draws_the_law(points, fit):
    bare = replace(fit, approaches={"approach3": fit.approaches["approach3"]})
    ax = plots.isoflop_figure(points, bare).axes[0]
    x, y = ax.lines[0].get_data()
    assert np.allclose(y, LAW.predict(x, 1e17 / (6 * x)))


def test_frontier_figure_lines_bands_and_references(points, fit):
    fig = plots.frontier_figure(fit, points, budget=1e21)
    ax_n, ax_d = fig.axes[:2]
    line = next(ln for ln in ax_n.lines if "Approach 3" in str(ln.get_label()))
    c, n = line.get_data()
    assert np.allclose(n, LAW.params_opt(c))
    assert c.max() >= 1e21  # the target budget is on the axis
    bands = [p for p in ax_n.collections if isinstance(p, PolyCollection)]
    assert bands, "bootstrap band missing"
    labels = [str(ln.get_label()) for ln in ax_n.lines]
    assert any("Kaplan" in lbl for lbl in labels) and any("Hoffmann" in lbl for lbl in labels)
    kaplan = next(ln for ln in ax_n.lines if "Kaplan" in str(ln.get_label()))
    kx, ky = kaplan.get_data()
    slope = np.diff(np.log(ky)) / np.diff(np.log(kx))
    assert np.allclose(slope, 0.73)
    assert ax_n.get_xscale() == "log" and ax_n.get_yscale() == "log"
    assert "FLOPs" in ax_n.get_xlabel() and "count" in ax_d.get_ylabel()
    assert not any("e+" in t for t in _tick_texts(fig))


def test_landscape_figure_frontier_and_isoflop_lines(points, fit):
    fig = plots.landscape_figure(fit, points, budget=1e21)
    ax = fig.axes[0]
    frontier = next(ln for ln in ax.lines if "frontier" in str(ln.get_label()))
    n, d = frontier.get_data()
    budgets = 6 * n * d
    assert np.allclose(LAW.params_opt(budgets), n)
    iso = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    for line in iso:
        x, y = line.get_data()
        assert np.allclose(6 * x * y, (6 * x * y)[0])  # each is one budget, C = 6ND
    assert len(iso) == len(BUDGETS) + 1  # the data's budgets and the target
    assert "Training tokens D" in ax.get_ylabel()


def test_curves_figure_envelope_is_the_lowest_loss(tmp_path):
    rows = []
    for n in (1e5, 1e6):
        for step in range(1, 51):
            tokens = step * 1e6
            rows.append(dict(run=f"n{n:g}", params=n, step=step, tokens=tokens,
                             flops=6 * n * tokens, loss=2 + 1e3 / n ** 0.3 / step ** 0.3))
    curves = pd.DataFrame(rows)
    fig = plots.curves_figure(curves)
    ax = fig.axes[0]
    envelope = next(ln for ln in ax.lines if "envelope" in str(ln.get_label()))
    x, y = envelope.get_data()
    for run_x, run_y in ((g["flops"], g["loss"]) for _, g in curves.groupby("run")):
        inside = (x >= run_x.min()) & (x <= run_x.max())
        interp = np.interp(np.log(x[inside]), np.log(run_x), run_y)
        assert np.all(y[inside] <= interp + 1e-12)
    assert "Parameters N" in fig.axes[1].get_ylabel()  # the colour bar says what colour means


def test_residuals_figure_plots_log_residuals(points, fit):
    fig = plots.residuals_figure(points, fit)
    ax = fig.axes[0]
    ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections
                         if len(c.get_offsets()) == 6])
    expect = np.log(points["loss"]) - np.log(LAW.predict(points["params"],
                                                             points["tokens"]))
    assert np.allclose(np.sort(ys), np.sort(expect))


def test_save_figure_writes_a_png_atomically(tmp_path, points, fit):
    path = plots.save_figure(plots.isoflop_figure(points, fit), tmp_path / "sub" / "iso.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["iso.png"]  # no temp file left


def test_non_embedding_fit_plots_non_embedding_counts(points, fit):
    ne_fit = replace(fit, params_kind="non_embedding")
    ax = plots.isoflop_figure(points, ne_fit).axes[0]
    assert "non-embedding" in ax.get_xlabel()
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections
                         if len(c.get_offsets()) == 6])
    assert np.allclose(np.sort(xs), np.sort(points["params_non_embedding"]))


def test_far_off_losses_do_not_flatten_the_isoflop_plot(points, fit):
    spiky = pd.concat([points] * 2, ignore_index=True)  # >= 20 points
    spiky.loc[0, "loss"] = 50.0
    ax = plots.isoflop_figure(spiky, fit).axes[0]
    assert ax.get_ylim()[1] < 50.0
    assert any("1 run above, up to 50" in t.get_text() for t in ax.texts)
    assert ax.get_ylim()[1] > points["loss"].max()  # every ordinary point stays visible
