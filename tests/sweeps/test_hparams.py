"""Hyper-parameter recipes against the published DeepSeek LLM rule and its own models."""

from __future__ import annotations

import dataclasses

import pytest

from scaling.errors import UserError
from sweeps import hparams


def test_deepseek_formula_values():
    r = hparams.DEEPSEEK
    # hand-computed: 0.3118 * 1e20**-0.125 = 0.3118 * 10**-2.5; 0.2920 * 10**(20 * 0.3271)
    assert r.lr(1e20) == pytest.approx(9.8600e-4, rel=1e-4)
    assert r.batch_tokens(1e20) == pytest.approx(1.01716e6, rel=1e-4)
    assert r.lr(1e17) == pytest.approx(0.3118 * 10 ** (-17 / 8), rel=1e-12)


@pytest.mark.parametrize("n_params, lr_published, batch_tokens_published", [
    (6.9e9, 4.2e-4, 2304 * 4096),   # DeepSeek LLM 7B, Table 2 (2T tokens)
    (67e9, 3.2e-4, 4608 * 4096),    # DeepSeek LLM 67B
])
def test_deepseek_rule_reproduces_the_published_models(n_params, lr_published, batch_tokens_published):
    flops = 6 * n_params * 2e12  # the paper counts M*D with M a little under 6N: 10% tolerance
    r = hparams.DEEPSEEK
    assert r.lr(flops) == pytest.approx(lr_published, rel=0.1)
    assert r.batch_tokens(flops) == pytest.approx(batch_tokens_published, rel=0.1)
    assert r.batch_size(flops, 4096) == 2048 if n_params < 1e10 else 4096  # power of two


def test_tiny_cpu_budgets_land_near_the_measured_values():
    # issue 7 measured lr ~1e-2 and 4 x 128 tokens per step working at 1e11-1e12 FLOPs
    for flops in (1e11, 3e11, 1e12):
        assert 5e-3 < hparams.DEEPSEEK.lr(flops) < 2e-2
        assert 4 <= hparams.DEEPSEEK.batch_size(flops, 128) <= 16
    assert hparams.TINY_BYTES.lr(1e11) == 1e-2
    assert hparams.TINY_BYTES.batch_size(1e15, 128) == 4


def test_clamps_and_rounding():
    r = hparams.DEEPSEEK
    assert r.lr(1.0) == r.lr_max  # 0.31 unclamped
    assert r.lr(1e60) == r.lr_min
    assert r.batch_size(1.0, 128) == r.batch_min
    assert r.batch_size(1e40, 128) == r.batch_max
    b = r.batch_size(1e18, 1000)
    assert b & (b - 1) == 0
    unrounded = dataclasses.replace(r, batch_pow2=False)
    assert unrounded.batch_size(1e18, 1000) == round(r.batch_tokens(1e18) / 1000)


def test_width_scaling_is_off_by_default_and_monotone_when_on():
    r = hparams.DEEPSEEK
    assert r.lr(1e18, d_model=64) == r.lr(1e18, d_model=1024)
    w = hparams.with_overrides(r, {"lr_width_exp": 1.0, "lr_max": 1.0})
    assert w.lr(1e18, d_model=128) == pytest.approx(2 * w.lr(1e18, d_model=256))


def test_warmup_scales_with_run_length():
    r = hparams.DEEPSEEK  # 5% of the run, at least 1, at most 2000, never over half
    assert r.warmup_steps(1000) == 50
    assert r.warmup_steps(10_000) == 500
    assert r.warmup_steps(10**6) == 2000
    assert r.warmup_steps(4) == 1
    assert r.warmup_steps(1) == 0


def test_choose_prefers_explicit_values():
    assert hparams.choose(hparams.DEEPSEEK, 1e20, 4096, lr=1e-3, batch_size=7) == (1e-3, 7)
    lr, batch = hparams.choose(hparams.DEEPSEEK, 1e20, 4096)
    assert lr == hparams.DEEPSEEK.lr(1e20) and batch == 256


def test_recipe_lookup_and_overrides():
    assert hparams.get_recipe("deepseek") is hparams.DEEPSEEK
    with pytest.raises(UserError, match="optim.recipe: unknown recipe 'adam'"):
        hparams.get_recipe("adam")
    r = hparams.with_overrides(hparams.DEEPSEEK, {"lr_max": 0.05})
    assert r.name == "deepseek[lr_max=0.05]" and r.lr(1.0) == 0.05
    assert hparams.with_overrides(hparams.DEEPSEEK, {}) is hparams.DEEPSEEK
    with pytest.raises(UserError, match="optim.lr_coef"):
        hparams.with_overrides(hparams.DEEPSEEK, {"lr_coef": 1.0})


# --------------------------------------------------------------- Porian et al. 2024 options

def test_beta2_keeps_its_token_horizon_by_batch_size():
    r = hparams.with_overrides(hparams.DEEPSEEK, {"beta2_ref_tokens": 524288})
    assert r.beta2_for(524288) == pytest.approx(0.95)
    assert r.beta2_for(65536) == pytest.approx(0.95 ** 0.125)  # 0.9936
    # the EMA horizon in tokens, batch / (1 - beta2), is about the same at both batches
    assert 65536 / (1 - r.beta2_for(65536)) == pytest.approx(524288 / (1 - 0.95), rel=0.05)
    assert r.beta2_for(512) == r.beta2_max == 0.999
    assert hparams.DEEPSEEK.beta2_for(512) == 0.95  # off by default
    assert "beta2_ref_tokens=524288" in r.name


def test_warmup_is_bounded_by_a_token_count():
    r = hparams.with_overrides(hparams.TINY_BYTES, {"warmup_tokens_per_param": 1.0})
    # 5K parameters at 512 tokens per step: 10 steps of warmup, not 5% of 11K = 550
    assert hparams.TINY_BYTES.warmup_steps(11000) == 550
    assert r.warmup_steps(11000, n_params=5000, batch_tokens=512) == 10
    assert r.warmup_steps(100, n_params=10**9, batch_tokens=512) == 5  # the share still bounds it
    with pytest.raises(ValueError, match="needs n_params"):
        r.warmup_steps(100)


def test_weight_decay_as_an_adamw_timescale():
    r = hparams.with_overrides(hparams.TINY_BYTES, {"wd_timescale": 0.2})
    wd = r.weight_decay_for(1e-2, 5000)
    assert wd == pytest.approx(1 / (0.2 * 1e-2 * 5000))  # 0.1
    assert 1 / (1e-2 * wd) == pytest.approx(0.2 * 5000)  # the timescale, in steps
    assert r.weight_decay_for(1e-2, 50000) == pytest.approx(wd / 10)  # longer run, less decay
    assert r.weight_decay_for(1e-5, 10) == r.wd_max
    assert hparams.TINY_BYTES.weight_decay_for(1e-2, 5000) == 0.1


SPEC = """
name = "porian"
[data]
source = "synthetic"
seq_len = 16
[budgets]
values = [1e10]
[grid]
sizes = 3
span = 4.0
[optim]
recipe = "tiny-bytes"
{extra}
[checks]
min_steps = 1
min_sizes = 1
"""


def _plan(extra: str):
    import tomllib

    from sweeps.plan import plan_sweep
    from sweeps.spec import parse_spec

    return plan_sweep(parse_spec(tomllib.loads(SPEC.format(extra=extra))), check=False)


def test_options_reach_every_run_and_config_json(tmp_path):
    import tomllib

    from scaling import runs
    from sweeps.spec import parse_spec
    from sweeps.sweep import prepare

    extra = ("warmup_tokens_per_param = 1.0\nbeta2_ref_tokens = 524288.0\n"
             "wd_timescale = 0.2")
    plan = _plan(extra)
    for r in plan.runs:
        c = r.config
        tokens = c.batch_size * c.model.seq_len
        assert c.optim.beta2 == pytest.approx(min(0.999, 0.95 ** (tokens / 524288)))
        assert c.optim.weight_decay == pytest.approx(min(1.0, 1 / (0.2 * c.optim.lr * c.n_steps)))
        n_params = r.planned.n_params
        assert c.schedule.warmup_steps <= max(1, -(-n_params // tokens))
        assert "wd_timescale=0.2" in r.recipe and "warmup_tokens_per_param=1.0" in r.recipe
    spec = parse_spec(tomllib.loads(SPEC.format(extra=extra)))
    _, dirs = prepare(spec, tmp_path, plan=plan)
    d = runs.read_config_json(dirs[0])
    assert d["recipe"] == plan.runs[0].recipe
    assert d["optim"]["beta2"] == plan.runs[0].config.optim.beta2
    assert d["shape_recipe"] == "aspect64x2per3dec-v1"


def test_recipe_weight_decay_reaches_the_run_and_the_spec_wins(monkeypatch):
    monkeypatch.setitem(hparams.RECIPES, "tiny-bytes",
                        dataclasses.replace(hparams.TINY_BYTES, weight_decay=0.03, beta2=0.98))
    assert {r.config.optim.weight_decay for r in _plan("").runs} == {0.03}
    assert {r.config.optim.beta2 for r in _plan("").runs} == {0.98}
    explicit = _plan("weight_decay = 0.2\nbeta2 = 0.9").runs
    assert {(r.config.optim.weight_decay, r.config.optim.beta2) for r in explicit} == {(0.2, 0.9)}


@pytest.mark.parametrize("extra, match", [
    ("beta2_ref = 1.5", "optim.beta2_ref: expected a finite number in"),
    ("wd_timescale = 0", "optim.wd_timescale: expected a finite number > 0"),
    ("warmup_tokens_per_param = -1", "optim.warmup_tokens_per_param"),
])
def test_bad_option_values(extra, match):
    with pytest.raises(UserError, match=match):
        _plan(extra)
