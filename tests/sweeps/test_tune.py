"""The [tune] block: lr sweeps at small cells, the bracket check, a fitted lr*(N, D) law
saved and used by a second spec as optim.recipe = "fitted:<name>"."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.lr_law import LrLaw, batch_cells_of, fit_cell, fit_lr_law
from scaling import runs
from scaling.errors import UserError
from scaling.fileio import read_json_object
from sweeps import hparams
from sweeps.plan import plan_sweep
from sweeps.sweep import run_sweep
from sweeps.tune import plan_tune

sys.path.insert(0, str(Path(__file__).parent))
from lr_trainer import BATCH_LAW, BATCH_LR_EXP, true_batch, true_lr  # noqa: E402
from spec_helpers import parse_text, small_grid  # noqa: E402

TRAINER = [sys.executable, str(Path(__file__).with_name("lr_trainer.py"))]

TUNE_SPEC = """
name = "tuner"
budgets = [3e10]
[data]
source = "synthetic"
seq_len = 32
""" + small_grid(min_steps=1, min_sizes=1) + """[tune]
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
""" + small_grid(recipe="fitted:tuner", min_steps=1, min_sizes=1)


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
    spec = parse_text(TUNE_SPEC)
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

    user = parse_text(USER_SPEC)
    with pytest.raises(UserError, match="optim.recipe: no fitted lr law for sweep 'tuner'"):
        plan_sweep(user, check=False, runs_dir=tmp_path / "elsewhere")
    monkeypatch.setenv(hparams.RUNS_DIR_ENV, str(tmp_path))  # what `scaling plan` reads
    plan = plan_sweep(user, check=False)
    assert {r.recipe for r in plan.runs} == {"fitted:tuner"}
    for r in plan.runs:
        n, d = r.planned.n_params, r.planned.n_tokens
        assert r.config.optim.lr == pytest.approx(min(law.lr(n, d), 3e-2), rel=1e-9)
        assert r.config.optim.lr == pytest.approx(min(true_lr(n, d), 3e-2), rel=0.1)


BATCH_TUNE_SPEC = TUNE_SPEC.replace("bootstrap = 100", "bootstrap = 100\nbatch_sizes = [2, 8, 32]")


@pytest.mark.slow
def test_batch_tuning_recovers_a_known_lr_and_batch_law_and_the_planner_uses_it(tmp_path):
    """The stand-in trainer's --batch loss: lr*(N, D, B) = lr*(N, D) (B/256)^0.5 and
    B*(C) = 256 (C/1e10)^0.25 tokens; the fitted recipe plans B*(budget) and lr* there."""
    spec = parse_text(BATCH_TUNE_SPEC)
    planned = plan_tune(spec)
    assert len(planned) == 3 * 3 * 5
    assert {r.config.batch_size for r in planned} == {2, 8, 32}
    run_sweep(spec, tmp_path, workers=2, train_cmd=[*TRAINER[:2], "--batch"])
    law = hparams.read_law(hparams.law_path("tuner", tmp_path))
    assert all(c.bracketed for c in law.cells)
    assert law.n_exp == pytest.approx(-0.4, abs=0.05)
    assert law.d_exp == pytest.approx(0.15, abs=0.05)
    assert law.b_exp == pytest.approx(BATCH_LR_EXP, abs=0.05)
    assert law.b_exp_interval[0] <= law.b_exp <= law.b_exp_interval[1]
    assert law.batch is not None and all(b.bracketed for b in law.batch.cells)
    assert law.batch.exp == pytest.approx(BATCH_LAW[1], abs=0.03)
    assert law.batch.batch_tokens(1e11) == pytest.approx(true_batch(1e11), rel=0.1)
    assert LrLaw.from_dict(law.to_dict()) == law

    user = parse_text(USER_SPEC)
    plan = plan_sweep(user, check=False, runs_dir=tmp_path)
    # B*(1e11) = 455 tokens = 14.2 sequences of 32: the recipe's power of two is 16
    assert {r.config.batch_size for r in plan.runs} == {16}
    for r in plan.runs:
        n, d = r.planned.n_params, r.planned.n_tokens
        assert r.config.optim.lr == pytest.approx(min(law.lr(n, d, 16 * 32), 3e-2), rel=1e-9)
        truth = true_lr(n, d) * (16 * 32 / 256) ** BATCH_LR_EXP
        assert r.config.optim.lr == pytest.approx(min(truth, 3e-2), rel=0.1)


def test_unbracketed_batch_says_which_way_and_the_recipe_keeps_its_batch(tmp_path):
    """Losses whose best batch is the largest tried: no B*(C) (the message says to extend
    upwards), the lr law still gains its B term, and the planner keeps the base batch."""
    rng = np.random.default_rng(3)
    cells = []
    for n, d in [(1e4, 2e5), (3e4, 6e5), (1e4, 8e5)]:
        for batch in (64.0, 128.0, 256.0):
            lrs = 1e-2 * 2.0 ** np.arange(-3, 4)
            best = 1e-2 * (n / 1e4) ** -0.4 * (batch / 128) ** 0.5
            losses = (2 + 0.05 * np.log(lrs / best) ** 2 - 0.01 * math.log(batch)
                      + rng.normal(0, 1e-4, lrs.size))
            cells.append(fit_cell(n, d, lrs, losses, batch_tokens=batch, flops=6 * n * d))
    law = fit_lr_law(cells, name="fitted:wide", base_recipe="tiny-bytes", n_boot=50)
    assert law.batch is None
    (msg,) = {b.message.split(": ", 1)[1] for b in batch_cells_of(law)}
    assert "extend tune.batch_sizes upwards" in msg
    assert law.b_exp == pytest.approx(0.5, abs=0.05)
    path = hparams.law_path("wide", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(law.to_dict()))
    recipe = hparams.get_recipe("fitted:wide", runs_dir=tmp_path)
    assert recipe.batch_size(1e11, 32) == hparams.TINY_BYTES.batch_size(1e11, 32) == 4
    lr, batch = hparams.choose(recipe, 1e11, 32, n_params=1e4, n_tokens=1e6)
    assert batch == 4 and lr == pytest.approx(law.lr(1e4, 1e6, 4 * 32), rel=1e-12)


def test_format_1_laws_still_read_and_a_broken_law_file_is_one_line(tmp_path):
    cells = [fit_cell(n, d, [1e-3, 3e-3, 1e-2, 3e-2],
                      [(math.log(x / (5e-3 * (n / 1e4) ** -0.5))) ** 2 for x in
                       (1e-3, 3e-3, 1e-2, 3e-2)]) for n, d in [(1e4, 1e6), (3e4, 1e6)]]
    law = fit_lr_law(cells, name="fitted:old", base_recipe="deepseek", n_boot=10)
    old = law.to_dict()
    old["format"] = 1
    for key in ("b_exp", "b_exp_interval", "batch"):
        old.pop(key)
    for c in old["cells"]:
        for key in ("batch_tokens", "loss_opt", "flops"):
            c.pop(key)
    assert LrLaw.from_dict(old).n_exp == pytest.approx(-0.5, abs=1e-6)
    path = hparams.law_path("old", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**old, "n_exp": "x"}))
    with pytest.raises(UserError, match=r"optim.recipe: .*lr_law.json: not an lr law saved by "
                                        r"a \[tune\] block"):
        hparams.get_recipe("fitted:old", runs_dir=tmp_path)


def test_tune_spec_errors():
    bad = TUNE_SPEC.replace("cells = [[3e3, 20], [3e4, 20], [1e4, 80]]",
                            "cells = [[3e3]]")
    with pytest.raises(UserError, match=r"tune.cells\[0\]: expected \[n_params, tokens_per_param\]"):
        parse_text(bad)
    bad = TUNE_SPEC.replace("lr_multipliers = [0.0625, 0.25, 1, 4, 16]",
                            "lr_multipliers = [1, 2]")
    with pytest.raises(UserError, match="tune.lr_multipliers: expected a list of >= 3"):
        parse_text(bad)
    with pytest.raises(UserError, match="optim.recipe: expected fitted:<sweep name>"):
        parse_text(USER_SPEC.replace("fitted:tuner", "fitted:"))
    # specs without a [tune] block keep their digest (no "tune" key in the dict)
    assert "tune" not in parse_text(USER_SPEC).to_dict()
    for batches, message in (("[4, 8]", r"tune.batch_sizes: expected a list of >= 3 positive"),
                             ("[4, 8, 0]", r"tune.batch_sizes\[2\]: expected a positive integer"),
                             ("[4, 8, 16.5]", r"tune.batch_sizes\[2\]: expected a positive integer"),
                             ("[4, 8, 8]", "tune.batch_sizes: expected distinct values")):
        with pytest.raises(UserError, match=message):
            parse_text(TUNE_SPEC + f"batch_sizes = {batches}\n")
    accum = TUNE_SPEC.replace("[checks]", "[train]\ngrad_accum = 4\n[checks]")
    with pytest.raises(UserError, match=r"tune.batch_sizes\[1\]: expected a multiple of "
                                        r"train.grad_accum \(4\), got 6"):
        parse_text(accum + "batch_sizes = [4, 6, 8]\n")
    own = TUNE_SPEC.replace('recipe = "tiny-bytes"', 'recipe = "fitted:tuner"')
    with pytest.raises(UserError, match="tune.recipe: required when optim.recipe is 'fitted:tuner'"):
        parse_text(own)
    spec = parse_text(own + 'recipe = "tiny-bytes"\n')
    assert {r.recipe for r in plan_tune(spec)} >= {"tiny-bytes[tune lr x1]"}
    # an LR-only [tune] block keeps its digest when the batch keys are absent
    plain = parse_text(TUNE_SPEC)
    assert parse_text(TUNE_SPEC + "batch_sizes = []\n").digest() == plain.digest()
    assert parse_text(BATCH_TUNE_SPEC).digest() != plain.digest()


def test_a_grid_that_cannot_be_planned_fails_before_the_tuning_trains(tmp_path):
    spec = parse_text(TUNE_SPEC.replace("budgets = [3e10]", "budgets = [1e6]"))
    with pytest.raises(UserError, match="budgets: "):
        run_sweep(spec, tmp_path, workers=1, train_cmd=TRAINER)
    assert not (tmp_path / "tuner-tune").exists()


@pytest.mark.slow
def test_one_spec_tunes_and_then_trains_its_grid_with_its_own_law(tmp_path):
    own = (TUNE_SPEC.replace('recipe = "tiny-bytes"', 'recipe = "fitted:tuner"')
           .replace("cells = [[3e3, 20], [3e4, 20], [1e4, 80]]", "cells = [[1e4, 20]]")
           + 'recipe = "tiny-bytes"\n')
    spec = parse_text(own)
    outcome = run_sweep(spec, tmp_path, workers=2, train_cmd=TRAINER)
    law = hparams.read_law(hparams.law_path("tuner", tmp_path))
    assert law.base_recipe == "tiny-bytes" and law.n_exp == 0.0  # one cell: a constant
    assert law.lr(1, 1) == pytest.approx(true_lr(*_cell_size(law)), rel=0.01)
    assert {r.recipe for r in outcome.plan.runs} == {"fitted:tuner"}
    for d in outcome.run_dirs:
        cfg = runs.read_config_json(d)
        assert cfg["recipe"] == "fitted:tuner"
        assert cfg["optim"]["lr"] == pytest.approx(min(law.coef, 3e-2), rel=1e-9)


def _cell_size(law: LrLaw) -> tuple[float, float]:
    (cell,) = law.cells
    return cell.n_params, cell.n_tokens
