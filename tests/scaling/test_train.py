import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import final_params, make_run, read_metrics, tiny_config  # noqa: E402

from scaling import mesh as mesh_lib
from scaling import runs, train_step
from scaling import train as train_mod
from scaling.config import ScheduleConfig
from scaling.dispatch import aligned_steps_per_dispatch, auto_steps_per_dispatch, chunk_end
from scaling.errors import UserError
from scaling.train import device_peak_flops, train_run
from scaling_cli.main import main

METRIC_KEYS = {"step", "tokens", "flops", "train_loss", "lr", "grad_norm", "tokens_per_s", "mfu"}
RESULT_KEYS = {"eval_loss", "eval_bpb", "n_params", "n_params_non_embedding", "n_tokens", "flops",
               "flops_by_convention", "budget", "steps", "epochs", "wall_time_s", "tokens_per_s"}


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "token-cache"
    monkeypatch.setenv("SCALING_CACHE", str(path))
    return path


def test_trains_past_the_unigram_baseline_and_writes_the_contract(tmp_path, cache):
    run_dir = make_run(tmp_path, eval_every=8, checkpoint_every=8, n_steps=40)
    result = train_run(run_dir, progress=False)
    assert RESULT_KEYS <= set(result)
    assert result["eval_loss"] < result["unigram_entropy"] - 0.1  # beats the context-free model
    assert result["steps"] == 40 and result["n_tokens"] == 40 * 8 * 32
    assert result["flops"] == pytest.approx(result["flops_by_convention"]["6N"])
    assert result["eval_bpb"] == pytest.approx(result["eval_loss"] / np.log(2))  # 1 byte/token
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["eval_loss"] == result["eval_loss"]
    status = runs.read_status(run_dir)
    assert status["state"] == "done" and status["step"] == 40
    config = json.loads((run_dir / "config.json").read_text())
    assert config["corpus_hash"] == result["corpus_hash"]

    lines = read_metrics(run_dir)
    assert [r["step"] for r in lines] == list(range(4, 41, 4))
    for r in lines:
        assert METRIC_KEYS <= set(r)
        assert r["tokens"] == r["step"] * 256
        assert r["flops"] == pytest.approx(r["tokens"] * result["flops"] / result["n_tokens"])
        assert r["mfu"] is None  # CPU: peak unknown, never guessed
        assert ("eval_loss" in r) == (r["step"] % 8 == 0)
    assert lines[-1]["eval_loss"] == pytest.approx(result["eval_loss"])
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    # warmup 3 then cosine to 10% at step 40: the lr of the last update (step index 39)
    assert lines[-1]["lr"] == pytest.approx(3e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 36 / 37))),
                                            rel=1e-5)
    # a second call on a finished run returns its result without training again
    assert train_run(run_dir, progress=False)["eval_loss"] == result["eval_loss"]


def test_steps_per_dispatch_does_not_change_the_result(tmp_path, cache):
    one = make_run(tmp_path / "a")
    many = make_run(tmp_path / "b")
    train_run(one, progress=False, steps_per_dispatch=1)
    train_run(many, progress=False, steps_per_dispatch=8)
    _, p1 = final_params(one)
    _, p8 = final_params(many)
    for a, b in zip(p1, p8, strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise, on CPU
    assert [r["train_loss"] for r in read_metrics(one)] == [r["train_loss"] for r in read_metrics(many)]


def test_chunks_cut_short_run_in_the_one_compiled_step(tmp_path, cache, monkeypatch):
    made = []

    def recording(ts, **kwargs):
        made.append(real(ts, **kwargs))
        return made[-1]

    real = train_mod.make_step_fn
    monkeypatch.setattr(train_mod, "make_step_fn", recording)
    run_dir = make_run(tmp_path, n_steps=11)  # log_every 4: chunks end at 4, 8, 11
    train_run(run_dir, progress=False, max_steps=6)  # stops at 6, resumes unaligned
    train_run(run_dir, progress=False)
    assert [f._cache_size() for f in made] == [1, 1]
    assert [r["step"] for r in read_metrics(run_dir)] == [4, 8, 11]


def test_grad_accumulation_matches_the_full_batch(tmp_path, cache):
    full = make_run(tmp_path / "a", n_steps=8)
    accum = make_run(tmp_path / "b", n_steps=8, grad_accum=4)
    r1 = train_run(full, progress=False)
    r4 = train_run(accum, progress=False)
    assert r4["eval_loss"] == pytest.approx(r1["eval_loss"], abs=1e-4)
    _, p1 = final_params(full)
    _, p4 = final_params(accum)
    for a, b in zip(p1, p4, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_nan_fault_marks_the_run_diverged(tmp_path, cache, monkeypatch, capsys):
    run_dir = make_run(tmp_path)
    monkeypatch.setenv("SCALING_FAULT_NAN_AT_STEP", "6")
    assert main(["train", str(run_dir), "--quiet"]) == 1
    assert "diverged" in capsys.readouterr().err
    status = runs.read_status(run_dir)
    assert status["state"] == "diverged" and status["step"] == 6
    assert "non-finite" in status["reason"]
    assert not (run_dir / "result.json").exists()
    assert all(r["step"] < 6 for r in read_metrics(run_dir))


def test_loss_spike_is_a_divergence(tmp_path, cache):
    from scaling.config import OptimConfig

    run_dir = make_run(tmp_path, n_steps=60, optim=OptimConfig(lr=30.0, grad_clip=0.0),
                       schedule=ScheduleConfig(kind="constant"))
    result = train_run(run_dir, progress=False)
    assert result["state"] == "diverged"
    assert runs.read_status(run_dir)["state"] == "diverged"


def test_max_steps_stops_resumably_and_resume_is_exact(tmp_path, cache):
    whole = make_run(tmp_path / "a", checkpoint_every=8)
    parts = make_run(tmp_path / "b", checkpoint_every=8)
    train_run(whole, progress=False)
    stopped = train_run(parts, progress=False, max_steps=10)
    assert stopped["state"] == "stopped" and stopped["step"] == 10
    assert runs.read_status(parts)["state"] == "pending"
    train_run(parts, progress=False)
    for a, b in zip(final_params(whole)[1], final_params(parts)[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert read_metrics(whole) == [
        {**r, "tokens_per_s": w["tokens_per_s"], "mfu": None}
        for r, w in zip(read_metrics(parts), read_metrics(whole), strict=True)]


def test_metrics_are_synced_before_each_checkpoint_and_the_result(tmp_path, cache, monkeypatch):
    """Metrics lines are appended without an fsync each; a checkpoint or the result vouches for
    them only after they are synced (an OS crash then loses at most lines a resume logs again)."""
    events: list[tuple[str, int]] = []
    run_dir = make_run(tmp_path, checkpoint_every=8)
    metrics = run_dir / runs.METRICS_FILE

    def sync(path):
        assert Path(path) == metrics
        events.append(("sync", len(read_metrics(run_dir))))

    real_save, real_result = train_mod.Checkpointer.save, runs.write_result
    monkeypatch.setattr(train_mod, "sync_file", sync)
    monkeypatch.setattr(train_mod.Checkpointer, "save", lambda self, step, *a: (
        events.append(("save", step)), real_save(self, step, *a)))
    monkeypatch.setattr(runs, "write_result", lambda *a: (
        events.append(("result", -1)), real_result(*a)))
    train_run(run_dir, progress=False)
    logged = [r["step"] for r in read_metrics(run_dir)]
    saves = [i for i, (kind, _) in enumerate(events) if kind == "save"]
    assert [events[i][1] for i in saves] == [8, 16, 24]
    for i in saves:
        assert events[i - 1] == ("sync", sum(s <= events[i][1] for s in logged))
    assert events[-2:] == [("sync", len(logged)), ("result", -1)]


def test_peak_flops_gives_mfu(tmp_path, cache):
    run_dir = make_run(tmp_path, n_steps=8)
    result = train_run(run_dir, progress=False, peak_flops=1e12)
    fpt = result["flops"] / result["n_tokens"]
    for r in read_metrics(run_dir):
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * fpt / 1e12)


def test_bad_input_is_a_user_error_and_leaves_the_run_dir(tmp_path, cache):
    run_dir = make_run(tmp_path, grad_accum=3)
    before = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    with pytest.raises(UserError, match="grad_accum"):
        train_run(run_dir, progress=False)
    assert runs.read_status(run_dir)["state"] == "pending"
    from scaling.shapes import ModelConfig

    small = ModelConfig(vocab_size=8, seq_len=32, n_layers=1, d_model=16, n_heads=1, head_dim=16,
                        d_ff=32)
    with pytest.raises(UserError, match="vocab_size"):
        train_run(make_run(tmp_path, model=small), progress=False)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == before
    assert main(["train", str(tmp_path / "nope")]) == 2


def test_dispatch_planning():
    assert auto_steps_per_dispatch(1e12, "cpu") == 1
    assert auto_steps_per_dispatch(1e10, "cpu") == 5
    assert auto_steps_per_dispatch(1e12, "gpu") == 4
    assert auto_steps_per_dispatch(1.0, "cpu") == 32
    # k divides every period, so only k-step and 1-step functions are ever compiled
    assert aligned_steps_per_dispatch(32, (25, 200, 0)) == 25
    assert aligned_steps_per_dispatch(32, (10, 0, 0)) == 10
    assert aligned_steps_per_dispatch(8, (8, 5, 0)) == 1
    assert aligned_steps_per_dispatch(7, (100, 0, 0)) == 5
    assert aligned_steps_per_dispatch(32, (0, 0, 0)) == 32
    # chunks end at multiples of k, of every period, and at marks: resume-independent;
    # only a mark or the stop cuts a chunk short
    ends, s = [], 0
    while s < 32:
        s = chunk_end(s, 32, 5, (5, 10, 0), (13,))
        ends.append(s)
    assert ends == [5, 10, 13, 15, 20, 25, 30, 32]
    assert device_peak_flops() is None  # CPU


def test_eigen_dot_option_keeps_the_step_and_reaches_the_compiler(monkeypatch):
    # From CPU_EIGEN_DOTS_MIN_D_MODEL the CPU step compiles its matmuls to Eigen instead
    # of YNNPACK: the same optimizer steps to float32 rounding, and the option must reach
    # XLA (no YNNPACK fusion left in the compiled program).
    assert train_step.step_compiler_options("gpu", 4096) == {}
    assert train_step.step_compiler_options("cpu", 32) == {}
    cfg = tiny_config()
    ts = train_step.TrainState(cfg, mesh_lib.make_mesh())
    rng = np.random.default_rng(0)
    batches = jnp.asarray(rng.integers(0, 32, (3, 1, 8, 33)), jnp.int32)
    results, programs = [], []
    for min_d_model in (10**9, 0):  # YNNPACK (the default at d_model 32), then Eigen
        monkeypatch.setattr(train_step, "CPU_EIGEN_DOTS_MIN_D_MODEL", min_d_model)
        step_fn = train_step.make_step_fn(ts)
        state = ts.init()
        args = (state["params"], state["opt_state"], jnp.asarray(0, jnp.int32),
                jnp.asarray(3, jnp.int32), batches, ts.scalars())
        programs.append(step_fn.lower(*args).compile().as_text())
        params, _, ce, *_ = step_fn(*args)
        results.append((jax.tree.leaves(params), np.asarray(ce)))
    assert "__ynn_fusion" in programs[0] and "__ynn_fusion" not in programs[1]
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5)
    for eigen, ynn in zip(results[1][0], results[0][0], strict=True):
        np.testing.assert_allclose(np.asarray(eigen), np.asarray(ynn), rtol=1e-4, atol=1e-6)
