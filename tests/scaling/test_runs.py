"""The run store: layout, atomic records, status merging, sweep ownership, locks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from scaling import runs
from scaling.config import RunConfig
from scaling.errors import UserError
from scaling.shapes import ModelConfig

PY = sys.executable


def tiny_cfg(**changes) -> RunConfig:
    model = ModelConfig(vocab_size=256, seq_len=16, n_layers=2, d_model=32, n_heads=2,
                        head_dim=16, d_ff=64)
    return RunConfig(model=model, n_steps=5, batch_size=2, sweep="s", budget=1e9).with_(**changes)


# ----------------------------------------------------------------------------- safe_child


def test_safe_child_accepts_plain_and_nested_names(tmp_path):
    assert runs.safe_child(tmp_path, "run1") == tmp_path / "run1"
    assert runs.safe_child(tmp_path, "a/b") == tmp_path / "a" / "b"


@pytest.mark.parametrize("name", ["..", "../x", "a/../../x", "/etc", "", "a//b", "x\x00y"])
def test_safe_child_refuses_escapes(tmp_path, name):
    with pytest.raises(UserError):
        runs.safe_child(tmp_path, name)


def test_safe_child_refuses_symlink_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    (base / "link").symlink_to(outside)
    with pytest.raises(UserError, match="outside"):
        runs.safe_child(base, "link")
    with pytest.raises(UserError, match="outside"):
        runs.safe_child(base, "link/run")
    (base / "inner").mkdir()
    (base / "ok").symlink_to(base / "inner")
    assert runs.safe_child(base, "ok") == base / "ok"


# ----------------------------------------------------------------------------- config


def test_init_run_dir_layout_and_derived_keys(tmp_path):
    from scaling.flops import flops_all, param_counts

    cfg = tiny_cfg()
    run_dir = runs.init_run_dir(tmp_path, cfg, recipe="r1")
    assert run_dir == tmp_path / "s" / cfg.run_name()
    d = json.loads((run_dir / "config.json").read_text())
    assert d["run_name"] == cfg.run_name()
    assert d["n_tokens"] == 5 * 2 * 16
    assert d["recipe"] == "r1"
    assert d["param_counts"] == param_counts(cfg.model)
    for conv, per_token in flops_all(cfg.model).items():
        assert d["flops_per_token"][conv] == pytest.approx(per_token)
        assert d["flops"][conv] == pytest.approx(per_token * cfg.n_tokens)
    assert runs.load_run_config(run_dir) == cfg
    status = runs.read_status(run_dir)
    assert status["state"] == "pending" and set(runs.STATUS_FIELDS) <= set(status)


def test_init_run_dir_is_idempotent_and_keeps_progress(tmp_path):
    cfg = tiny_cfg()
    run_dir = runs.init_run_dir(tmp_path, cfg)
    runs.write_status(run_dir, "done")
    runs.write_result(run_dir, {"eval_loss": 1.5})
    assert runs.init_run_dir(tmp_path, cfg) == run_dir
    assert runs.read_status(run_dir)["state"] == "done"
    assert runs.read_result(run_dir) == {"eval_loss": 1.5}


def test_init_run_dir_refuses_a_different_config_under_the_same_name(tmp_path):
    cfg = tiny_cfg()
    run_dir = runs.init_run_dir(tmp_path, cfg)
    d = json.loads((run_dir / "config.json").read_text())
    d["seed"] = 99  # hand edit: the name no longer matches the content
    (run_dir / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="different config"):
        runs.init_run_dir(tmp_path, cfg)


def test_run_dir_for_default_sweep_and_bad_sweep_name(tmp_path):
    cfg = tiny_cfg(sweep="")
    assert runs.run_dir_for(tmp_path, cfg).parent == tmp_path / "default"
    with pytest.raises(UserError):
        runs.run_dir_for(tmp_path, tiny_cfg(sweep="../evil"))


def test_load_run_config_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="config.json: not found"):
        runs.load_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        runs.load_run_config(tmp_path)


def test_update_config_fields_adds_derived_keys_only(tmp_path):
    run_dir = runs.init_run_dir(tmp_path, tiny_cfg())
    runs.update_config_fields(run_dir, corpus_hash="abc")
    assert runs.read_config_json(run_dir)["corpus_hash"] == "abc"
    assert runs.load_run_config(run_dir) == tiny_cfg()
    with pytest.raises(ValueError):
        runs.update_config_fields(run_dir, seed=3)


# ----------------------------------------------------------------------------- status


def test_status_defaults_merge_and_validation(tmp_path):
    assert runs.read_status(tmp_path)["state"] == "pending"
    s = runs.write_status(tmp_path, "running", step=3)
    assert s["pid"] == os.getpid() and s["host"] == socket.gethostname()
    assert s["step"] == 3 and s["heartbeat"] == pytest.approx(time.time(), abs=5)
    runs.heartbeat(tmp_path, 7)
    assert runs.read_status(tmp_path)["step"] == 7
    s = runs.write_status(tmp_path, "diverged", reason="loss is nan at step 8")
    assert s["state"] == "diverged" and s["reason"] == "loss is nan at step 8"
    assert s["step"] == 7 and s["pid"] == os.getpid()  # merged, not replaced
    s = runs.write_status(tmp_path, "pending")
    assert s["reason"] is None  # a new state clears the old reason
    with pytest.raises(ValueError):
        runs.write_status(tmp_path, "exploded")
    on_disk = json.loads((tmp_path / "status.json").read_text())
    assert set(runs.STATUS_FIELDS) <= set(on_disk)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_effective_state(tmp_path):
    runs.write_status(tmp_path, "running")
    assert runs.effective_state(tmp_path) == "running"  # this process is alive
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    runs.write_status(tmp_path, "running", pid=int(dead.stdout))
    assert runs.effective_state(tmp_path) == "interrupted"
    runs.write_status(tmp_path, "running", heartbeat=time.time() - 10 * runs.DEFAULT_STALE_AFTER_S)
    assert runs.effective_state(tmp_path) == "interrupted"
    runs.write_result(tmp_path, {"eval_loss": 1.0})
    assert runs.effective_state(tmp_path) == "done"  # killed between result and status


def test_list_run_dirs_depth_one_and_two(tmp_path):
    for rel in ["s1/b", "s1/a", "s2/c", "lone"]:
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "config.json").write_text("{}")
    (tmp_path / "s1" / "not_a_run").mkdir()
    (tmp_path / "s1" / "x" / "y" / "z").mkdir(parents=True)
    (tmp_path / "s1" / "x" / "y" / "z" / "config.json").write_text("{}")  # depth 4: not a run
    outside = tmp_path.parent / (tmp_path.name + "_outside")
    (outside / "r").mkdir(parents=True)
    (outside / "r" / "config.json").write_text("{}")
    (tmp_path / "s3").symlink_to(outside)
    got = runs.list_run_dirs(tmp_path)
    assert got == sorted([tmp_path / "lone", tmp_path / "s1/a", tmp_path / "s1/b", tmp_path / "s2/c"])
    assert runs.list_run_dirs(tmp_path / "s1") == [tmp_path / "s1/a", tmp_path / "s1/b"]
    with pytest.raises(UserError):
        runs.list_run_dirs(tmp_path / "missing")




# ----------------------------------------------------------------------------- typed records


def test_read_run_carries_the_resolved_config_status_and_result(tmp_path):
    from scaling.flops import flops_all, param_counts

    cfg = tiny_cfg(seed=3)
    run_dir = runs.init_run_dir(tmp_path, cfg, recipe="r1")
    runs.write_status(run_dir, "running", step=2)
    rec = runs.read_run(run_dir)
    assert (rec.run_dir, rec.name, rec.sweep, rec.state) == (run_dir, cfg.run_name(), "s", "running")
    assert rec.param_counts == param_counts(cfg.model) and rec.n_params == rec.param_counts["total"]
    assert rec.n_tokens == 5 * 2 * 16 and rec.budget == 1e9 and rec.convention == "6N"
    for conv, per_token in flops_all(cfg.model).items():
        assert rec.flops[conv] == pytest.approx(per_token * 160)
    assert rec.run_flops == rec.flops["6N"]
    assert (rec.vocab_size, rec.seq_len, rec.n_layers, rec.d_model) == (256, 16, 2, 32)
    assert (rec.seed, rec.lr, rec.batch_size, rec.n_steps) == (3, cfg.optim.lr, 2, 5)
    assert (rec.step, rec.pid, rec.host) == (2, os.getpid(), socket.gethostname())
    assert rec.result is None and rec.measured_tokens_per_s is None
    runs.write_result(run_dir, {"eval_loss": 2.5, "n_params": 7, "wall_time_s": 3.0,
                                "flops_by_convention": {"6N": 1e9}, "tokens_per_s": float("nan")})
    done = runs.read_run(run_dir)  # killed before the status write: the result counts
    assert done.state == "done" and done.reason is None
    assert (done.result.eval_loss, done.result.n_params, done.result.wall_time_s) == (2.5, 7, 3.0)
    assert done.result.flops_by_convention == {"6N": 1e9} and done.result.tokens_per_s is None
    assert done.n_params == 7  # the trainer's count wins over the planned one


def test_read_run_reports_unreadable_records_and_tolerates_partial_configs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"budget": 1e12, "sweep": "x"}))
    (tmp_path / "a" / "status.json").write_text(json.dumps({"state": "failed", "reason": "boom"}))
    rec = runs.read_run(tmp_path / "a")
    assert (rec.state, rec.reason, rec.budget, rec.n_tokens, rec.param_counts) == (
        "failed", "boom", 1e12, None, {})
    (tmp_path / "a" / "result.json").write_text('{"eval_loss": 3.')
    bad = runs.read_run(tmp_path / "a")
    assert bad.state == "unreadable" and "result.json" in bad.reason and "not valid JSON" in bad.reason


def test_measured_tokens_per_s_only_when_asked(tmp_path):
    run_dir = runs.init_run_dir(tmp_path, tiny_cfg())
    with open(run_dir / runs.METRICS_FILE, "w") as f:
        for step, rate in ((1, 10.0), (2, 200.0), (3, 400.0), (4, 300.0)):
            f.write(json.dumps({"step": step, "tokens_per_s": rate}) + "\n")
        f.write('{"step": 5, "tokens_per_s": 9')  # cut by a crash
    assert runs.read_run(run_dir).measured_tokens_per_s is None
    # the first log (compilation) is left out: median of 200, 400, 300
    assert runs.read_run(run_dir, throughput=True).measured_tokens_per_s == 300.0


def test_iter_runs_lists_by_the_one_rule(tmp_path):
    dirs = [runs.init_run_dir(tmp_path, tiny_cfg(seed=i)) for i in range(3)]
    (tmp_path / "s" / "not_a_run").mkdir()
    assert [r.run_dir for r in runs.iter_runs(tmp_path)] == runs.list_run_dirs(tmp_path) == sorted(dirs)
    assert [r.seed for r in runs.iter_runs(tmp_path / "s")] == [
        runs.load_run_config(d).seed for d in sorted(dirs)]
    with pytest.raises(UserError, match="not a directory"):
        runs.iter_runs(tmp_path / "missing")  # at once, not on first use
