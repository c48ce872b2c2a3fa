"""Rolling-origin validation on a known law, and the mode without budgets."""

import math

import numpy as np
import pytest

from analysis.rollout import rollout
from analysis.simulate import EPOCH_LAW, generate_points, isoflop_design
from scaling.errors import UserError

BUDGETS = [1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


@pytest.mark.slow
def test_rollout_errors_shrink_as_budgets_are_added():
    """Against the known law (not the noisy observed vertex): the forecast of the next
    budget's N* and minimum loss is better from five budgets than from two."""
    first, last = [], []
    for seed in (0, 1, 2):
        pts = generate_points(isoflop_design(BUDGETS, n_per_budget=7), noise=0.005, rng=seed)
        roll = rollout(pts, n_bootstrap=0)
        assert roll.mode == "budgets" and [s.target for s in roll.steps] == BUDGETS[2:]
        for s in roll.steps:
            assert s.n_target == 7 and len(s.predicted) == 7
        err = [(abs(math.log(s.params_opt_predicted / EPOCH_LAW.params_opt(s.target))),
                abs(s.loss_opt_predicted / EPOCH_LAW.loss_opt(s.target) - 1))
               for s in roll.steps]
        first.append(err[0])
        last.append(err[-1])
    first, last = np.mean(first, axis=0), np.mean(last, axis=0)
    assert np.all(last < first), (first, last)


def test_rollout_step_intervals_with_a_bootstrap():
    pts = generate_points(isoflop_design(BUDGETS[:3], n_per_budget=7), noise=0.005, rng=3)
    (step,) = rollout(pts, n_bootstrap=20).steps
    assert step.loss_opt_pi[0] < step.loss_opt_predicted < step.loss_opt_pi[1]
    for row in step.predicted:
        assert row["pi"][0] < row["predicted"] < row["pi"][1]
        assert row["inside"] == (row["pi"][0] <= row["observed"] <= row["pi"][1])


def test_without_budgets_rollout_goes_over_model_sizes():
    pts = generate_points(isoflop_design([1e18, 1e19], n_per_budget=6), noise=0.005, rng=2)
    pts["budget"] = np.nan
    roll = rollout(pts, n_bootstrap=0)
    assert roll.mode == "sizes"
    sizes = np.unique(pts["params"])
    assert [s.target for s in roll.steps] == [t for t in sizes[3:]
                                              if (pts["params"] < t).sum() >= 10]
    for s in roll.steps:
        assert s.n_target == int((pts["params"] >= s.target).sum())
        assert np.isnan(s.params_opt_log_error)
    assert roll.to_dict()["summary"]["n_steps"] == len(roll.steps)


def test_too_few_runs_is_one_line():
    pts = generate_points(isoflop_design([1e18], n_per_budget=5), noise=0.005)
    with pytest.raises(UserError, match="rollout"):
        rollout(pts, n_bootstrap=0)


def test_rollout_block_feeds_the_report_table_and_figure():
    from analysis.plots import rollout_figure
    from analysis.report import rollout_rows

    pts = generate_points(isoflop_design(BUDGETS[:3], n_per_budget=6), noise=0.005, rng=4)
    block = rollout(pts, n_bootstrap=0).to_dict()
    rows = rollout_rows(block)
    assert len(rows) == len(block["steps"]) == 1 and rows[0][0] == "1e19"
    fig = rollout_figure(block)
    (ax,) = fig.axes
    # The diagonal spans the observed losses; the legend names the predicted budget.
    diagonal = ax.lines[-1].get_xdata()
    assert diagonal[0] <= min(r["observed"] for r in block["steps"][0]["predicted"])
    assert "predicting 1e19" in [t.get_text() for t in ax.get_legend().get_texts()]
