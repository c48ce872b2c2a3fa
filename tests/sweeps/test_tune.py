"""The [tune] block: lr sweeps at small cells, the bracket check, a fitted lr*(N, D) law
saved and used by a second spec as optim.recipe = "fitted:<name>"."""

from __future__ import annotations

import math
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from analysis.lr_law import LrLaw, fit_cell, fit_lr_law
from scaling import runs
from scaling.errors import UserError
from scaling.fileio import read_json_object
from sweeps import hparams
from sweeps.plan import plan_sweep
from sweeps.spec import parse_spec
from sweeps.sweep import run_sweep
from sweeps.tune import plan_tune

sys.path.insert(0, str(Path(__file__).parent))
from lr_trainer import true_lr  # noqa: E402

TRAINER = [sys.executable, str(Path(__file__).with_name("lr_trainer.py"))]

TUNE_SPEC = """
name = "tuner"
budgets = [3e10]
[data]
source = "synthetic"
seq_len = 32
[grid]
sizes = 3
span = 4.0
[optim]
recipe = "tiny-bytes"
[checks]
min_steps = 1
min_sizes = 1
[tune]
cells = [[3e3, 20], [3e4, 20], [1e4, 80]]
lr_multipliers = [0.0625, 0.25, 1, 4, 16]
bootstrap = 100
"""

USER_SPEC = """
name = "user"
budgets = [1e11]
[data]
source = "synthetic"
seq_len = 32
[grid]
sizes = 3
span = 4.0
[optim]
recipe = "fitted:tuner"
[checks]
min_steps = 1
min_sizes = 1
"""


def test_fit_cell_brackets_and_says_which_way_to_extend():
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    ok = fit_cell(1e4, 1e6, lrs, [(math.log(x / 5e-3)) ** 2 for x in lrs])
    assert ok.bracketed and ok.lr_opt == pytest.approx(5e-3, rel=1e-6)
    up = fit_cell(1e4, 1e6, lrs, [(math.log(x / 1e-1)) ** 2 for x in lrs])
    assert not up.bracketed and "extend the multipliers upwards" in up.message
    down = fit_cell(1e4, 1e6, lrs, [(math.log(x / 1e-4)) ** 2 for x in lrs])
    assert not down.bracketed and "downwards" in down.message
    # a diverged largest lr brackets from above
    div = fit_cell(1e4, 1e6, lrs, [3.0, 2.0, 2.5, math.inf])
    assert div.bracketed and 1e-3 < div.lr_opt < 1e-2
    with pytest.raises(ValueError, match="no tuning cell has a bracketed optimum.*upwards"):
        fit_lr_law([up], name="fitted:x", base_recipe="deepseek")


def test_law_recovers_known_exponents_with_intervals():
    rng = np.random.default_rng(0)
    cells = []
    for n, d in [(1e4, 2e5), (3e4, 6e5), (1e5, 2e6), (3e4, 4e6), (1e4, 1e6)]:
        lrs = 3e-3 * 2.0 ** np.arange(-3, 5)
        truth = 0.02 * (n / 1e4) ** -0.5 * (d / 1e6) ** 0.2
        losses = 2 + 0.05 * np.log(lrs / truth) ** 2 + rng.normal(0, 2e-3, lrs.size)
        cells.append(fit_cell(n, d, lrs, losses))
    law = fit_lr_law(cells, name="fitted:x", base_recipe="deepseek", n_boot=300, seed=1)
    assert law.n_exp == pytest.approx(-0.5, abs=0.1)
    assert law.d_exp == pytest.approx(0.2, abs=0.1)
    assert law.n_exp_interval[0] < law.n_exp < law.n_exp_interval[1]
    assert law.lr(3e4, 1e6) == pytest.approx(0.02 * 3 ** -0.5, rel=0.2)
    assert LrLaw.from_dict(law.to_dict()) == law


@pytest.mark.slow
def test_tune_block_runs_fits_saves_and_a_second_spec_uses_the_law(tmp_path, monkeypatch):
    spec = parse_spec(tomllib.loads(TUNE_SPEC))
    planned = plan_tune(spec)
    assert len(planned) == 3 * 5
    assert all(r.config.sweep == "tuner-tune" for r in planned)
    outcome = run_sweep(spec, tmp_path, workers=2, train_cmd=TRAINER)
    assert list(outcome.states.values()).count("done") == len(outcome.plan.runs)
    law_file = hparams.law_path("tuner", tmp_path)
    law = LrLaw.from_dict(read_json_object(law_file))
    assert all(c.bracketed for c in law.cells)
    # the stand-in trainer's law: lr* = 1e-2 (N/1e4)^-0.4 (D/1e6)^0.15
    assert law.n_exp == pytest.approx(-0.4, abs=0.05)
    assert law.d_exp == pytest.approx(0.15, abs=0.05)
    config = runs.read_config_json(runs.run_dir_for(tmp_path, planned[0].config))
    assert config["recipe"] == "tiny-bytes[tune lr x0.0625]"

    user = parse_spec(tomllib.loads(USER_SPEC))
    with pytest.raises(UserError, match="optim.recipe: no fitted lr law for sweep 'tuner'"):
        plan_sweep(user, check=False, runs_dir=tmp_path / "elsewhere")
    monkeypatch.setenv(hparams.RUNS_DIR_ENV, str(tmp_path))  # what `scaling plan` reads
    plan = plan_sweep(user, check=False)
    assert {r.recipe for r in plan.runs} == {"fitted:tuner"}
    for r in plan.runs:
        n, d = r.planned.n_params, r.planned.n_tokens
        assert r.config.optim.lr == pytest.approx(min(law.lr(n, d), 3e-2), rel=1e-9)
        assert r.config.optim.lr == pytest.approx(min(true_lr(n, d), 3e-2), rel=0.1)


def test_tune_spec_errors():
    bad = TUNE_SPEC.replace("cells = [[3e3, 20], [3e4, 20], [1e4, 80]]",
                            "cells = [[3e3]]")
    with pytest.raises(UserError, match=r"tune.cells\[0\]: expected \[n_params, tokens_per_param\]"):
        parse_spec(tomllib.loads(bad))
    bad = TUNE_SPEC.replace("lr_multipliers = [0.0625, 0.25, 1, 4, 16]",
                            "lr_multipliers = [1, 2]")
    with pytest.raises(UserError, match="tune.lr_multipliers: expected a list of >= 3"):
        parse_spec(tomllib.loads(bad))
    with pytest.raises(UserError, match="optim.recipe: expected fitted:<sweep name>"):
        parse_spec(tomllib.loads(USER_SPEC.replace("fitted:tuner", "fitted:")))
    # specs without a [tune] block keep their digest (no "tune" key in the dict)
    assert "tune" not in parse_spec(tomllib.loads(USER_SPEC)).to_dict()
