"""analysis.tune_plots: the report's tuning curves, law figure and table from a saved law."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib.lines import Line2D

from analysis import tune_plots
from analysis.lr_law import fit_cell, fit_lr_law


def _lr_law():
    """Three bracketed cells (lr* = 1e-2 (N/1e4)^-0.5) and one whose optimum lies above its grid."""
    rng = np.random.default_rng(0)
    cells = []
    for n, d, truth in [(1e4, 2e5, None), (3e4, 6e5, None), (1e5, 2e6, None), (1e4, 8e5, 1.0)]:
        lrs = 1e-2 * 2.0 ** np.arange(-3, 4)
        best = truth or 1e-2 * (n / 1e4) ** -0.5
        losses = 2 + 0.05 * np.log(lrs / best) ** 2 + rng.normal(0, 1e-4, lrs.size)
        cells.append(fit_cell(n, d, lrs, losses, batch_tokens=512.0, flops=6 * n * d))
    return fit_lr_law(cells, name="fitted:t", base_recipe="tiny-bytes", n_boot=50)


def _batch_law():
    cells = []
    for n, d in [(1e4, 2e5), (3e4, 6e5), (1e5, 2e6)]:
        for batch in (64.0, 256.0, 1024.0):
            lrs = 1e-2 * 2.0 ** np.arange(-3, 4)
            best = 1e-2 * (batch / 256) ** 0.5
            b_opt = 256 * (6 * n * d / 1e10) ** 0.25
            losses = 2 + 0.05 * np.log(lrs / best) ** 2 + 0.02 * math.log(batch / b_opt) ** 2
            cells.append(fit_cell(n, d, lrs, losses, batch_tokens=batch, flops=6 * n * d))
    return fit_lr_law(cells, name="fitted:b", base_recipe="tiny-bytes", n_boot=50)


def _stars(ax) -> int:
    return sum(1 for line in ax.get_lines() if isinstance(line, Line2D) and line.get_marker() == "*")


def test_tuning_curves_have_a_panel_per_cell_and_a_star_per_bracketed_optimum():
    law = _lr_law()
    fig = tune_plots.tuning_curves_figure(law)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    assert [_stars(ax) for ax in axes] == [int(c.bracketed) for c in law.cells] == [1, 1, 1, 0]
    assert "NOT bracketed" in axes[3].get_title() and "upwards" in axes[3].get_title()
    # the saved parabola is drawn through the cell's own losses (not refitted elsewhere)
    curve = next(line for line in axes[0].get_lines() if line.get_linestyle() == "-")
    x, y = curve.get_data()
    assert np.allclose(y, np.polyval(law.cells[0].coeffs, np.log(x)))


def test_law_figure_draws_the_law_with_its_band_and_the_batch_panel():
    law = _lr_law()
    (ax,) = tune_plots.lr_law_figure(law).axes
    assert len(ax.collections) >= 1  # the bootstrap band
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    x, y = lines[0].get_data()
    assert np.allclose(y, [law.coef * n ** law.n_exp * (20 * n) ** law.d_exp for n in x])
    assert any(line.get_marker() == "^" for line in ax.get_lines())  # the unbracketed cell
    batch = _batch_law()
    assert batch.batch is not None and batch.batch.exp == pytest.approx(0.25, abs=0.02)
    assert len(tune_plots.lr_law_figure(batch).axes) == 2
    assert len(tune_plots.tuning_curves_figure(batch).axes) == 3


def test_find_tune_laws_for_a_tune_dir_a_sweep_dir_a_user_of_the_law_and_a_runs_dir(tmp_path):
    law = _lr_law()
    tune_dir = tmp_path / "tuner-tune"
    tune_dir.mkdir()
    (tune_dir / "lr_law.json").write_text(json.dumps(law.to_dict()))
    for sweep, recipe in (("tuner", "tiny-bytes"), ("user", "fitted:tuner[lr_max=0.1]"),
                          ("other", "deepseek")):
        (tmp_path / sweep / "run0").mkdir(parents=True)
        (tmp_path / sweep / "run0" / "config.json").write_text(json.dumps({"recipe": recipe}))
    found = {src: [p for p, _ in tune_plots.find_tune_laws(tmp_path / src)]
             for src in ("tuner-tune", "tuner", "user", "other")}
    assert found == {"tuner-tune": [tune_dir / "lr_law.json"], "tuner": [tune_dir / "lr_law.json"],
                     "user": [tune_dir / "lr_law.json"], "other": []}
    assert [p for p, _ in tune_plots.find_tune_laws(tmp_path)] == [tune_dir / "lr_law.json"]
    (tune_dir / "lr_law.json").write_text("{}")  # unreadable: no section, no crash
    assert tune_plots.find_tune_laws(tmp_path / "tuner") == []


def test_cell_rows_and_law_lines_say_what_is_trusted():
    law = _lr_law()
    rows = tune_plots.cell_rows(law)
    assert [r[-1] == "yes" for r in rows] == [True, True, True, False]
    assert "extend the multipliers upwards" in rows[3][-1]
    (line,) = tune_plots.law_lines(law)
    assert f"N^{law.n_exp:.3f}" in line and "80% residual-bootstrap" in line
    assert len(tune_plots.law_lines(_batch_law())) == 2
