"""IsoFLOP grid planning: snapshot, budget tolerance, drops, bad input, run-name inversion."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.config import RunConfig
from scaling.errors import UserError
from scaling.flops import CONVENTIONS, flops_per_token, param_counts
from scaling.shapes import ModelConfig
from sweeps.grid import (
    MAX_BUDGET,
    parse_run_name,
    plan_budget_full,
    plan_sizes,
    smallest_budget,
)

# plan_budget_full(1e15) with the defaults (6N, vocab 256, seq_len 256 as `_runs` passes it, 7 sizes over 30x, 20
# tokens/param): (n_params, n_layers, d_model, n_heads, d_ff, n_tokens). A change here is a
# change to the recipe or the solver and must be deliberate.
SNAPSHOT_1E15 = [
    (478352, 3, 112, 7, 296, 348418560),
    (927920, 6, 112, 7, 296, 179613184),
    (1572320, 5, 160, 5, 424, 106000384),
    (3079328, 5, 224, 7, 600, 54124288),
    (4885760, 6, 256, 4, 704, 34112768),
    (8949888, 5, 384, 6, 1024, 18622208),
    (16030848, 9, 384, 6, 1024, 10396672),
]
# plan_budget_full(1e18, convention="chinchilla", vocab_size=32000, seq_len=1024, n_sizes=5, span=10)
SNAPSHOT_1E18_CHINCHILLA = [
    (24680064, 7, 384, 6, 1024, 3918632960),
    (42327360, 6, 576, 9, 1536, 2454130688),
    (75012480, 11, 640, 10, 1728, 1514261504),
    (135325632, 13, 832, 13, 2240, 904136704),
    (235176960, 16, 1024, 16, 2752, 552134656),
]


def _runs(budget, **kwargs):
    kwargs.setdefault("seq_len", 256)
    return list(plan_budget_full(budget, **kwargs).runs)


def _rows(runs):
    return [(r.n_params, r.config.n_layers, r.config.d_model, r.config.n_heads, r.config.d_ff,
             r.n_tokens) for r in runs]


def test_snapshot_default_grid():
    plan = plan_budget_full(1e15, seq_len=256)
    assert _rows(plan.runs) == SNAPSHOT_1E15
    assert plan.dropped == ()
    assert plan.center_params == pytest.approx(math.sqrt(1e15 / 120))  # 6N: exact


def test_snapshot_chinchilla_grid():
    runs = _runs(1e18, convention="chinchilla", vocab_size=32_000, seq_len=1024,
                       n_sizes=5, span=10)
    assert _rows(runs) == SNAPSHOT_1E18_CHINCHILLA


def _check_runs(runs, budget, convention, seq_len, unit, tolerance=0.01):
    for r in runs:
        assert r.budget == budget and r.convention == convention
        assert r.n_tokens % unit == 0 and r.n_tokens >= unit
        assert r.config.seq_len == seq_len
        # recompute everything from the shape alone
        counts = param_counts(r.config)
        assert (r.n_params, r.n_params_non_embedding) == (counts["total"], counts["non_embedding"])
        flops = flops_per_token(r.config, convention) * r.n_tokens
        assert r.flops == pytest.approx(flops, rel=1e-12)
        assert r.rel_error == pytest.approx(flops / budget - 1, abs=1e-12)
        assert abs(flops / budget - 1) <= tolerance
        assert r.tokens_per_param == pytest.approx(r.n_tokens / r.n_params)
    sizes = [r.n_params for r in runs]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_grid_is_centred_on_20_tokens_per_param(convention):
    runs = _runs(1e19, convention=convention, vocab_size=50_000, seq_len=2048)
    _check_runs(runs, 1e19, convention, 2048, 2048)
    assert len(runs) == 7
    middle = runs[3]
    assert middle.tokens_per_param == pytest.approx(20, rel=0.1)
    # the sizes span the requested factor (to within what the solver hits)
    assert runs[-1].n_params / runs[0].n_params == pytest.approx(30, rel=0.1)
    targets = [r.target_params for r in runs]
    ratios = [b / a for a, b in zip(targets[:-1], targets[1:], strict=True)]
    assert all(x == pytest.approx(30 ** (1 / 6)) for x in ratios)


def test_rounding_to_batches_drops_and_says_why():
    plan = plan_budget_full(1e12, seq_len=256, batch_size=256)
    unit = 256 * 256
    _check_runs(plan.runs, 1e12, "6N", 256, unit)
    assert len(plan.runs) + len(plan.dropped) == 7
    assert len(plan.dropped) == 2
    for d in plan.dropped:
        assert "off the budget" in d.reason and "65536 tokens" in d.reason


def test_center_override_and_tokens_per_param():
    runs = _runs(1e17, center_params=1e6, n_sizes=3, span=4.0)
    assert [r.target_params for r in runs] == pytest.approx([5e5, 1e6, 2e6])
    runs = _runs(1e17, tokens_per_param=200.0, n_sizes=3, span=1.5)
    assert runs[1].tokens_per_param == pytest.approx(200, rel=0.1)


def test_plan_sizes_explicit_targets():
    plan = plan_sizes(1e15, [1e6, 1e6, 3e6, 10.0], seq_len=256, batch_size=4)
    assert plan.center_params is None
    _check_runs(plan.runs, 1e15, "6N", 256, 1024)
    assert [r.target_params for r in plan.runs] == [1e6, 3e6]
    assert [d.reason.split(":")[0] for d in plan.dropped] == \
        ["same shape as a neighbouring size", "target_params"]
    # the same mechanics as the grid: its runs come back unchanged
    grid = plan_budget_full(1e15)
    again = plan_sizes(1e15, [r.target_params for r in grid.runs])
    assert again.runs == grid.runs


@settings(max_examples=30, deadline=None)
@given(exponent=st.floats(11.0, 24.0), convention=st.sampled_from(CONVENTIONS),
       vocab_size=st.sampled_from([256, 4096, 32_000]), n_sizes=st.integers(3, 9),
       seq_len=st.sampled_from([64, 256, 1024]))
def test_every_planned_run_is_within_one_percent(exponent, convention, vocab_size, n_sizes,
                                                 seq_len):
    budget = 10.0 ** exponent
    try:
        plan = plan_budget_full(budget, convention=convention, vocab_size=vocab_size,
                                seq_len=seq_len, n_sizes=n_sizes)
    except UserError as e:  # only near the smallest usable budget
        assert budget < 1e4 * smallest_budget(convention=convention, vocab_size=vocab_size,
                                              seq_len=seq_len), str(e)
        return
    _check_runs(plan.runs, budget, convention, seq_len, seq_len)
    assert len(plan.runs) + len(plan.dropped) == n_sizes


@pytest.mark.parametrize("kwargs,match", [
    ({"budget": -1.0}, "^budget: expected a positive finite"),
    ({"budget": 0.0}, "^budget: expected a positive finite"),
    ({"budget": float("nan")}, "^budget: expected a positive finite"),
    ({"budget": "a lot"}, "^budget: expected a positive number"),
    ({"budget": MAX_BUDGET * 2}, "^budget: expected at most 1e\\+30"),
    ({"budget": 1e6}, "^budget: 1e\\+06 FLOPs is below what the smallest model can use"),
    ({"budget": 1e15, "convention": "flops"}, "^convention: expected one of"),
    ({"budget": 1e15, "n_sizes": 2}, "^sizes: expected an integer >= 3"),
    ({"budget": 1e15, "span": 1.0}, "^span: expected a number > 1"),
    ({"budget": 1e15, "seq_len": 0}, "^seq_len: expected a positive integer"),
])
def test_bad_input(kwargs, match):
    budget = kwargs.pop("budget")
    with pytest.raises(UserError, match=match):
        _runs(budget, **kwargs)


def test_budget_too_small_for_three_sizes():
    floor = smallest_budget()
    plan = plan_budget_full(floor * 1.5)  # the sizes below the smallest model are dropped
    assert len(plan.runs) == 4 and len(plan.dropped) == 3
    assert all("below the smallest model" in d.reason for d in plan.dropped)
    with pytest.raises(UserError, match="^budget: .* leaves only 2 usable model sizes"):
        _runs(floor * 1.5, n_sizes=3)


def test_1e30_plans():
    runs = _runs(MAX_BUDGET, n_sizes=3)
    _check_runs(runs, MAX_BUDGET, "6N", 256, 256)


def _run_config(budget):
    model = ModelConfig(vocab_size=256, seq_len=128, n_layers=4, d_model=128, n_heads=4,
                        head_dim=32, d_ff=344)
    return RunConfig(model=model, batch_size=8, n_steps=1234, budget=budget, sweep="s")


@pytest.mark.parametrize("budget", [1.234e17, None, 9.99e29, 3e5])
def test_parse_run_name_inverts_run_name(budget):
    cfg = _run_config(budget)
    parsed = parse_run_name(cfg.run_name())
    assert parsed["n_params"] == param_counts(cfg.model)["total"]
    assert parsed["n_layers"] == 4 and parsed["d_model"] == 128
    assert parsed["n_tokens"] == pytest.approx(cfg.n_tokens, rel=0.05)
    if budget is None:
        assert parsed["budget"] is None
    else:
        assert parsed["budget"] == pytest.approx(budget, rel=0.05)
    assert len(parsed["digest"]) == 8 and parsed["digest"] in cfg.run_name()


@pytest.mark.parametrize("name", ["", "n12_d1.0e+03_L1_D8", "c1e18_n1_d1.0e+03_L1_D8_abcdef12",
                                  "n1_d1.0e+03_L1_D8_abcdef12/..", None])
def test_parse_run_name_rejects(name):
    with pytest.raises(UserError, match="^run name:"):
        parse_run_name(name)
