"""Sweep specs: validation messages, log-spaced budgets, the plan and its design checks."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from scaling.errors import UserError
from sweeps import checks, spec
from sweeps.plan import plan_sweep, wsd_savings

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from spec_helpers import BASE, load_text, parse_text, write_spec  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("text, message", [
    ("name = \"x\"\nbudgets = [1e12\n", "malformed TOML"),
    ("budgets = [1e12]\n", "name: missing"),
    ("name = \"x\"\n", "budgets: missing"),
    ("name = \"x\"\nbudgets = [1e12]\nfoo = 1\n", "foo: unknown key"),
    ("name = \"x\"\nbudgets = [1e12]\n[data]\nseqlen = 5\n", "data.seqlen: unknown key"),
    ("name = \"x\"\n[budgets]\nmin = 1e10\nmax = 1e12\ncount = 'x'\n",
     "budgets.count: expected an integer in [1, 100], got 'x'"),
    ("name = \"x\"\n[budgets]\nmin = 1e12\nmax = 1e10\ncount = 3\n", "budgets.max: expected >="),
    ("name = \"x\"\nbudgets = [-1]\n", "budgets[0]: expected a finite number > 0"),
    ("name = \"x\"\nbudgets = [1e31]\n", "budgets[0]"),
    ("name = \"x\"\nbudgets = ['a']\n", "budgets[0]: expected a number"),
    ("name = \"x\"\nbudgets = [1e12]\nconvention = \"7N\"\n", "convention: expected one of"),
    ("name = \"../x\"\nbudgets = [1e12]\n", "name: expected letters"),
    ("name = \"x-tune\"\nbudgets = [1e12]\n", "name: 'x-tune' ends in '-tune'"),
    ("name = \"x\"\nbudgets = [1e12]\n[data]\nseq_len = true\n", "data.seq_len: expected an integer"),
    ("name = \"x\"\nbudgets = [1e12]\n[data]\ntokenizer = \"wordpiece\"\n", "data.tokenizer"),
    ("name = \"x\"\nbudgets = [1e12]\n[data]\nsource = \"http://x\"\n", "data.source"),
    ("name = \"x\"\nbudgets = [1e12]\n[optim]\nrecipe = \"magic\"\n", "optim.recipe: unknown recipe"),
    ("name = \"x\"\nbudgets = [1e12]\n[optim]\nlr = 0\n", "optim.lr: expected a finite number > 0"),
    ("name = \"x\"\nbudgets = [1e12]\n[grid]\ncenter = \"middle\"\n", "grid.center: expected one of"),
    ("name = \"x\"\nbudgets = [1e12]\n[launcher]\nkind = \"k8s\"\n", "launcher.kind"),
    ("name = \"x\"\nbudgets = [1e12]\n[launcher]\npartition = \"a;rm -rf\"\n", "launcher.partition"),
    ("name = \"x\"\nbudgets = [1e12]\nseeds = [1, 1]\n", "seeds: expected distinct"),
    ("name = \"x\"\nbudgets = [1e12]\n[schedule]\ndecay_frac = 0\n", "schedule.decay_frac"),
    ("name = \"x\"\nbudgets = 5\n", "budgets: expected a table"),
])
def test_bad_specs_name_the_field(tmp_path, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(UserError) as e:
        spec.load_spec(path)
    assert message in str(e.value)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(UserError, match="spec file not found"):
        spec.load_spec(tmp_path / "nope.toml")
    (tmp_path / "b.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8"):
        spec.load_spec(tmp_path / "b.toml")


def test_defaults_and_log_spaced_budgets(tmp_path):
    s = load_text(tmp_path, "name = \"x\"\n[budgets]\nmin = 1e10\nmax = 1e12\ncount = 5\n")
    assert s.budgets == (1e10, 3.162e10, 1e11, 3.162e11, 1e12)
    assert s.convention == "6N" and s.seeds == (0,) and s.vocab_size == 256
    assert s.data.seq_len == 128 and s.grid.sizes == 7 and s.optim.recipe == "deepseek"
    s2 = load_text(tmp_path, "name = \"x\"\nbudgets = [3e11, 1e11]\nseed = 4\n"
                             "[data]\ntokenizer = \"bpe:1024\"\n")
    assert s2.budgets == (1e11, 3e11) and s2.seeds == (4,) and s2.vocab_size == 1024


def test_digest_ignores_launcher_options(tmp_path):
    a = load_text(tmp_path, BASE)
    b = load_text(tmp_path, BASE + "[launcher]\nworkers = 2\n")
    c = load_text(tmp_path, BASE.replace("sizes = 3", "sizes = 4"))
    assert a.digest() == b.digest() != c.digest()


def test_plan_meets_budgets_and_recipe(tmp_path):
    from scaling.flops import flops_per_token

    s = load_text(tmp_path, BASE)
    planned = plan_sweep(s).runs
    assert len(planned) == 6
    for p in planned:
        cfg = p.config
        assert cfg.batch_size == 4 and cfg.optim.lr == 1e-2 and p.recipe == "tiny-bytes"
        flops = flops_per_token(cfg.model, "6N") * cfg.n_tokens
        assert abs(flops / cfg.budget - 1) <= 0.01
        assert cfg.n_tokens == cfg.n_steps * cfg.batch_size * cfg.model.seq_len
        assert cfg.schedule.warmup_steps == round(0.05 * cfg.n_steps)
        assert cfg.sweep == "t" and cfg.model.vocab_size == 256
    names = [p.run_name for p in planned]
    assert len(set(names)) == 6 and names == [p.run_name for p in plan_sweep(s).runs]


def test_deepseek_recipe_sets_batch_and_lr_from_the_budget(tmp_path):
    from sweeps.hparams import DEEPSEEK

    s = load_text(tmp_path, BASE.replace("tiny-bytes", "deepseek"))
    for p in plan_sweep(s).runs:
        assert p.config.optim.lr == pytest.approx(DEEPSEEK.lr(p.config.budget))
        assert p.config.batch_size == DEEPSEEK.batch_size(p.config.budget, 16)


def test_explicit_sizes_and_wsd_sharing(tmp_path):
    text = BASE.replace("sizes = 3\nspan = 4.0", "params = [8000, 16000, 32000]") + (
        "[schedule]\nkind = \"wsd\"\ndecay_frac = 0.2\n")
    s = load_text(tmp_path, text)
    plan = plan_sweep(s)
    by_model = {}
    for r in plan.runs:
        by_model.setdefault(r.config.model, []).append(r)
    assert len(by_model) == 3 and all(len(v) == 2 for v in by_model.values())
    for members in by_model.values():
        short, long = sorted(members, key=lambda r: r.config.n_steps)
        assert short.branch_of == long.run_name and long.keep_steps == (short.branch_step,)
        assert short.branch_step == short.config.schedule.stable_steps
        assert short.branch_step == short.config.n_steps - round(0.2 * short.config.n_steps)
    expected = sum(r.flops * r.branch_step / r.config.n_steps for r in plan.runs if r.branch_of)
    assert wsd_savings(plan) == pytest.approx(expected) and expected > 0
    assert plan.trained_flops < plan.total_flops


def test_checks_warn_and_refuse(tmp_path):
    s = load_text(tmp_path, BASE.replace("min_steps = 10", "min_steps = 100000"))
    plan = plan_sweep(s)
    kinds = {(f.level, f.check) for f in plan.findings}
    assert ("warning", "steps") in kinds
    strict = load_text(tmp_path, BASE.replace("min_steps = 10", "min_steps = 100000")
                                 + "strict = true\n")
    with pytest.raises(UserError, match="checks.strict"):
        plan_sweep(strict)
    few = load_text(tmp_path, BASE.replace("min_sizes = 3", "min_sizes = 5"))
    assert any(f.check == "sizes" for f in plan_sweep(few).findings)
    off = load_text(tmp_path, BASE.replace("sizes = 3\nspan = 4.0",
                                           "params = [4000, 5000, 6000]"))
    msgs = [f.message for f in plan_sweep(off).findings if f.check == "bracket"]
    assert msgs and "do not bracket" in msgs[0]
    epochs = load_text(tmp_path, BASE.replace("seq_len = 16",
                                              "seq_len = 16\nmax_epochs = 1.0"))
    with pytest.raises(UserError, match="data.max_epochs"):
        checks.check_plan(plan_sweep(epochs, check=False), train_tokens=1000)
    assert checks.check_plan(plan_sweep(epochs, check=False), train_tokens=10**9) == []


def test_too_few_steps_is_refused(tmp_path):
    # the 1% budget tolerance already needs ~50 steps, so shorten one planned run by hand
    import dataclasses

    from sweeps.plan import SweepPlan

    plan = plan_sweep(load_text(tmp_path, BASE), check=False)
    first = plan.runs[0]
    short = dataclasses.replace(first, config=first.config.with_(n_steps=9))
    bad = SweepPlan(spec=plan.spec, runs=(short, *plan.runs[1:]))
    with pytest.raises(UserError, match="1 run.s. have fewer than 10 optimiser steps"):
        checks.check_plan(bad)


def test_impossible_budget_is_a_user_error(tmp_path):
    s = load_text(tmp_path, BASE.replace("[1e10, 3e10]", "[1e5]"))
    with pytest.raises(UserError, match="budgets"):
        plan_sweep(s)


@pytest.mark.parametrize("name", ["demo", "small", "gpu-1e18", "cluster-1e20"])
def test_examples_parse_and_plan(name):
    s = spec.load_spec(EXAMPLES / f"{name}.toml")
    plan = plan_sweep(s, check=False)
    assert len(plan.runs) >= 5 * len(s.budgets)
    assert all(abs(r.flops / r.config.budget - 1) <= 0.01 for r in plan.runs)
    assert math.isfinite(plan.total_flops)


def _model_spec(model: str):
    text = ('name = "m"\nbudgets = [1e11]\n[data]\nseq_len = 128\n[grid]\nsizes = 6\n'
            'span = 16.0\ntokens_per_param = 40.0\n[optim]\nrecipe = "tiny-bytes"\n'
            '[checks]\nmin_sizes = 1\n[model]\n' + model)
    return parse_text(text)


def test_model_shape_and_parameterization_reach_the_plan():
    from sweeps.plan import plan_sweep

    s = _model_spec('shape = "ladder"\naspect_ratio = 8.0\nparameterization = "mup"\n')
    assert s.model.shape_recipe.name == "depth-ladder-a8-v1" and s.model.base_width == 64
    runs_ = plan_sweep(s, check=False).runs
    assert [r.config.model.n_layers for r in runs_] == [1, 2, 3, 4, 5]
    assert {(r.config.model.parameterization, r.config.model.base_width) for r in runs_} == {
        ("mup", 64)}
    default = _model_spec("")
    assert default.model.shape_recipe.name == "aspect64x2per3dec-v1"
    assert {r.config.model.parameterization for r in plan_sweep(default, check=False).runs} == {
        "sp"}


@pytest.mark.parametrize("model, message", [
    ('shape = "cube"', "model.shape: expected one of ladder, solver"),
    ("aspect_ratio = 8.0", "model.aspect_ratio: only the ladder recipe takes one"),
    ('shape = "ladder"\naspect_ratio = 0.5', "model.aspect_ratio: expected a finite number in"),
    ('parameterization = "ntk"', "model.parameterization: expected one of sp, mup"),
    ("base_width = 64", "model.base_width: only parameterization"),
])
def test_bad_model_fields(model, message):
    with pytest.raises(UserError, match=message):
        _model_spec(model)
