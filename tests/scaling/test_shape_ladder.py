"""The depth-ladder shape recipe: one dial, regular grids, budgets still met to 1%."""

from __future__ import annotations

import math

import pytest

from scaling.errors import UserError
from scaling.flops import param_counts
from scaling.shapes import LadderRecipe, recipe_named, shape_recipe, solve_shape
from sweeps.grid import plan_budget_full, smallest_budget


@pytest.mark.parametrize("aspect", [8, 12, 64, 100])
def test_width_is_aspect_times_depth_rounded_up_to_the_head_size(aspect):
    recipe = shape_recipe("ladder", aspect)
    for n_layers in range(1, 60):
        width = recipe.width_for_depth(n_layers)
        head = recipe.head_dim_for(width)
        assert width % head == 0
        assert aspect * n_layers <= width < aspect * n_layers + 2 * head


def test_nearest_depth_in_log_by_brute_force():
    recipe = shape_recipe("ladder", 8)
    counts = {}
    for n_layers in range(1, 40):
        from scaling.shapes import make_config

        cfg = make_config(recipe.width_for_depth(n_layers), n_layers, 256, 128, recipe=recipe)
        counts[n_layers] = param_counts(cfg)["total"]
    for target in [3e3, 7e3, 2e4, 5.5e4, 1.3e5, 1e6, 4e6]:
        best = min(counts, key=lambda n: abs(math.log(counts[n] / target)))
        solved = solve_shape(target, 256, 128, recipe=recipe)
        assert solved.config.n_layers == best
        assert solved.n_params == counts[best]
        assert solved.recipe == "depth-ladder-a8-v1"


@pytest.mark.parametrize("aspect, vocab, seq_len, budgets, convention", [
    (8, 256, 128, [1e11, 3e11, 1e12, 1e13], "6N"),
    (64, 8192, 1024, [1e16, 1e17, 3.16e17, 1e18], "chinchilla"),
    (64, 32000, 2048, [1e19, 1e21], "kaplan"),
])
def test_grids_are_monotone_in_depth_and_width_and_within_one_percent(aspect, vocab, seq_len,
                                                                      budgets, convention):
    recipe = shape_recipe("ladder", aspect)
    for budget in budgets:
        plan = plan_budget_full(budget, n_sizes=7, span=20.0, convention=convention,
                                vocab_size=vocab, seq_len=seq_len, batch_size=8, recipe=recipe)
        depths = [r.config.n_layers for r in plan.runs]
        widths = [r.config.d_model for r in plan.runs]
        sizes = [r.n_params for r in plan.runs]
        assert depths == sorted(set(depths)), depths  # strictly increasing
        assert widths == sorted(widths), widths
        assert sizes == sorted(set(sizes))
        assert all(w == recipe.width_for_depth(d) for w, d in zip(widths, depths, strict=True))
        for r in plan.runs:
            assert abs(r.flops / budget - 1) <= 0.01  # tokens absorb the size miss
            assert r.n_tokens % (seq_len * 8) == 0
        assert all(d.reason == "same shape as a neighbouring size" for d in plan.dropped)


def test_the_solver_is_not_monotone_on_the_demo_grid():
    # the reason for the ladder: the solver mixes 1 x 96 with 8 x 8 (issue 15)
    plan = plan_budget_full(3e11, n_sizes=6, span=16.0, vocab_size=256, seq_len=128,
                            tokens_per_param=40.0, batch_size=4, recipe=shape_recipe("solver"))
    depths = [r.config.n_layers for r in plan.runs]
    assert depths != sorted(depths)


def test_smallest_model_and_budget_of_a_ladder():
    recipe = shape_recipe("ladder", 64)
    with pytest.raises(UserError, match="below the smallest model of depth-ladder-a64-v1"):
        solve_shape(1e4, 256, 128, recipe=recipe)
    one_layer = solve_shape(7e4, 256, 128, recipe=recipe).config
    assert (one_layer.n_layers, one_layer.d_model) == (1, 64)
    assert smallest_budget(recipe=recipe, vocab_size=256, seq_len=128) > smallest_budget(
        vocab_size=256, seq_len=128)


def test_recipe_lookup():
    assert shape_recipe("ladder").name == "depth-ladder-a64-v1"
    assert isinstance(shape_recipe("ladder", 8.0), LadderRecipe)
    assert shape_recipe("solver").name == "aspect64x2per3dec-v1"
    with pytest.raises(UserError, match="model.aspect_ratio: only the ladder"):
        shape_recipe("solver", 8.0)
    with pytest.raises(UserError, match="model.shape: expected one of"):
        shape_recipe("cube")


@pytest.mark.parametrize("kind,aspect", [("solver", None), ("ladder", None), ("ladder", 8.0),
                                         ("ladder", 12.5)])
def test_a_recorded_recipe_name_gives_the_recipe_back(kind, aspect):
    recipe = shape_recipe(kind, aspect)
    assert recipe_named(recipe.name) == recipe


@pytest.mark.parametrize("name", ["depth-ladder-a8-v2", "depth-ladder-aeight-v1",
                                  "depth-ladder-a0-v1", "cube", ""])
def test_an_unknown_recipe_name_is_refused_by_name(name):
    with pytest.raises(UserError, match="shape_recipe: "):
        recipe_named(name)


def test_scaling_plan_of_the_gpu_example_has_monotone_depths(capsys, tmp_path):
    """`scaling plan examples/gpu-1e18.toml`: the solver gave depths 11, 6, 12, 12, 11, 16,
    15 along 3.16e17 (issue 15); the ladder's rise with size along every budget."""
    import json
    from pathlib import Path

    from scaling_cli.main import main

    spec = Path(__file__).resolve().parents[2] / "examples" / "gpu-1e18.toml"
    assert main(["plan", str(spec), "--runs-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    budgets = sorted({r["budget"] for r in rows})
    assert len(budgets) == 5
    for budget in budgets:
        runs = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["n_params"])
        depths = [r["n_layers"] for r in runs]
        assert len(depths) >= 5 and depths == sorted(set(depths)), (budget, depths)
        assert [r["d_model"] for r in runs] == [64 * d for d in depths]
        assert all(abs(r["flops"] / budget - 1) <= 0.01 for r in runs)
