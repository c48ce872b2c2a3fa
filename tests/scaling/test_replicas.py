"""Replica groups (scaling.replicas): runs differing only in scalar hyper-parameters, trained
as one vmapped group, against the same runs trained alone, and against themselves killed
and resumed; the grouping key; the launcher grouping them by itself.

What holds on CPU (measured): a replica is NOT bit-identical to its solo run (vmap makes
every matmul a batched one, which XLA:CPU rounds differently); after 24 steps its
parameters agree within PARAM_ATOL / PARAM_RTOL (seen: 1.2e-6 abs, 3.5e-6 rel) and its logged
losses within LOSS_RTOL. The same holds between groups whose lanes are laid out differently
(`scaling train` of a group splits its lanes over one XLA host device per core; this
process, whose JAX started before, has one device): how many lanes share a device changes
the rounding. A group killed and resumed IS bit-identical to an uninterrupted group of the
same runs on the same devices.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import (  # noqa: E402
    REPO,
    cli_env,
    final_params,
    make_run,
    read_metrics,
    run_cli,
    scaling_cmd,
    tiny_config,
)

from scaling import mesh as mesh_lib
from scaling import runs
from scaling.config import OptimConfig
from scaling.replica_groups import group_key, group_runs
from scaling.replicas import init_group, n_lanes, train_group, usable_cores
from scaling.train import train_run
from scaling.train_step import TrainState
from sweeps.launch import local

PARAM_ATOL, PARAM_RTOL = 2e-5, 1e-4  # float32, after 24 steps of a 21K-parameter model
LOSS_RTOL = 1e-5
RUN = dict(n_steps=24, checkpoint_every=4, log_every=4, eval_every=12)
HPARAMS = (dict(seed=0, optim=OptimConfig(lr=3e-3)),
           dict(seed=1, optim=OptimConfig(lr=1e-2, weight_decay=0.0)),
           dict(seed=2, optim=OptimConfig(lr=1e-3, beta2=0.99, grad_clip=0.5)))


@pytest.fixture(scope="module", autouse=True)
def token_cache(tmp_path_factory):
    old = os.environ.get("SCALING_CACHE")
    os.environ["SCALING_CACHE"] = str(tmp_path_factory.mktemp("token-cache"))
    yield os.environ["SCALING_CACHE"]
    if old is None:
        os.environ.pop("SCALING_CACHE")
    else:
        os.environ["SCALING_CACHE"] = old


def make_group(root: Path, hparams=HPARAMS, **changes) -> list[Path]:
    return [make_run(root, **{**RUN, **changes}, **h) for h in hparams]


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """The uninterrupted group."""
    dirs = make_group(tmp_path_factory.mktemp("group"))
    train_group(dirs, progress=False)
    return dirs


def _same_bits(a: Path, b: Path) -> None:
    step_a, params_a = final_params(a)
    step_b, params_b = final_params(b)
    assert step_a == step_b == RUN["n_steps"]
    for x, y in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(x, y)
    lines_a, lines_b = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in lines_a] == [r["step"] for r in lines_b]
    for r, g in zip(lines_a, lines_b, strict=True):
        assert r["train_loss"] == g["train_loss"] and r.get("eval_loss") == g.get("eval_loss")


def test_group_key_ignores_scalar_hyper_parameters_only():
    base = tiny_config()
    same = [base.with_(seed=7), base.with_(optim=OptimConfig(lr=1e-1, weight_decay=0.0,
                                                              beta1=0.8, beta2=0.99, eps=1e-6,
                                                              grad_clip=0.3))]
    assert all(group_key(c) == group_key(base) for c in same)
    other = [base.with_(n_steps=25), base.with_(batch_size=4),
             base.with_(model=replace(base.model, seq_len=16)),
             base.with_(optim=OptimConfig(grad_clip=0.0)),  # no clipping: another optimizer
             base.with_(optim=OptimConfig(z_loss=1e-4))]
    assert len({group_key(c) for c in [base, *other]}) == 1 + len(other)


def test_group_runs_splits_by_key_and_fills_the_slots(tmp_path):
    a = make_group(tmp_path / "a") + [make_run(tmp_path / "a", seed=9, **RUN)]
    b = [make_run(tmp_path / "b", n_steps=12)]
    groups = group_runs([*a, *b])
    assert groups == [tuple(a), tuple(b)]
    assert group_runs([*a, *b], min_groups=3) == [tuple(a[:2]), tuple(a[2:]), tuple(b)]
    assert group_runs(a, max_size=3) == [tuple(a[:3]), tuple(a[3:])]


def test_init_with_a_traced_seed_draws_the_constant_seeds_bits():
    # Every run of a shape (alone or in a group) inits from one program with the seed as an
    # argument; it must draw what a program with that seed baked in draws.
    mesh = mesh_lib.make_mesh(1)
    cfgs = [tiny_config(seed=s, optim=OptimConfig(lr=lr)) for s, lr in ((0, 3e-3), (5, 1e-2))]
    ts = TrainState(cfgs[0], mesh)
    got = init_group(ts, [c.seed for c in cfgs])
    for i, c in enumerate(cfgs):
        baked = jax.jit(lambda seed=c.seed: nnx.split(ts._build(seed), nnx.Param, ...)[1])()
        leaves_got, leaves_want = jax.tree.leaves(got["params"]), jax.tree.leaves(baked)
        assert len(leaves_got) == len(leaves_want)
        for x, y in zip(leaves_got, leaves_want, strict=True):
            np.testing.assert_array_equal(x[i], np.asarray(y))
    assert not np.array_equal(got["rng"][0], got["rng"][1])
    assert ts._init._cache_size() == 1


@pytest.mark.slow
def test_each_replica_matches_its_solo_run_within_float32_tolerance(tmp_path, group):
    for d, h in zip(group, HPARAMS, strict=True):
        solo = make_run(tmp_path, **RUN, **h)
        train_run(solo, progress=False)
        assert runs.read_status(d)["state"] == "done"
        _, solo_params = final_params(solo)
        _, group_params = final_params(d)
        for x, y in zip(solo_params, group_params, strict=True):
            np.testing.assert_allclose(y, x, rtol=PARAM_RTOL, atol=PARAM_ATOL)
        solo_lines, group_lines = read_metrics(solo), read_metrics(d)
        assert [r["step"] for r in solo_lines] == [r["step"] for r in group_lines]
        for r, g in zip(solo_lines, group_lines, strict=True):
            assert g["train_loss"] == pytest.approx(r["train_loss"], rel=LOSS_RTOL)
            assert g["lr"] == pytest.approx(r["lr"], rel=1e-6)  # its own schedule
        solo_result, group_result = runs.read_result(solo), runs.read_result(d)
        assert group_result["eval_loss"] == pytest.approx(solo_result["eval_loss"], rel=LOSS_RTOL)
        assert group_result["n_params"] == solo_result["n_params"]


@pytest.mark.slow
def test_stopped_group_resumes_bit_identically_even_from_uneven_checkpoints(tmp_path, group):
    dirs = make_group(tmp_path)
    # Stopped off the 4-step chunk grid: the chunks at the stop are cut short.
    stopped = train_group(dirs, max_steps=10, progress=False)
    assert all(r["state"] == "stopped" and r["step"] == 10 for r in stopped.values())
    assert all(runs.read_status(d)["state"] == "pending" for d in dirs)
    # A kill between two runs' saves leaves one a checkpoint behind: the group resumes at 8.
    shutil.rmtree(dirs[1] / "checkpoints" / "10")
    train_group(dirs, progress=False)
    for ref, got in zip(group, dirs, strict=True):
        _same_bits(ref, got)


def _close(ref: Path, got: Path) -> None:
    _, params_ref = final_params(ref)
    _, params_got = final_params(got)
    for x, y in zip(params_ref, params_got, strict=True):
        np.testing.assert_allclose(y, x, rtol=PARAM_RTOL, atol=PARAM_ATOL)
    assert runs.read_result(got)["eval_loss"] == pytest.approx(
        runs.read_result(ref)["eval_loss"], rel=LOSS_RTOL)


@pytest.mark.slow
def test_sigkilled_group_resumes_bit_identically(tmp_path, token_cache, group):
    """On the two host devices `scaling train` gives a group here (3 runs: 4 lanes, 2 a
    device), against the same command uninterrupted."""
    env = cli_env(Path(token_cache))
    ref_dirs = make_group(tmp_path / "ref")
    ref = run_cli("train", *map(str, ref_dirs), env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr
    n_dev = min(usable_cores(), len(ref_dirs))  # 2 on a 2-core machine: the lanes split
    assert f"{n_lanes(len(ref_dirs), n_dev)} lanes on {n_dev} device(s)" in ref.stderr
    for solo_group, d in zip(group, ref_dirs, strict=True):
        _close(solo_group, d)  # another lane layout: within float32 tolerance
    dirs = make_group(tmp_path / "killed")
    proc = subprocess.Popen(scaling_cmd("train", *map(str, dirs), "--quiet"), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    ckpt = dirs[-1] / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and any(p.name.isdigit() and int(p.name) >= 8 for p in ckpt.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert runs.read_status(dirs[0])["state"] == "running", "the group finished before the kill"
    done = run_cli("train", *map(str, dirs), env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from step" in done.stderr
    for ref, got in zip(ref_dirs, dirs, strict=True):
        _same_bits(ref, got)


@pytest.mark.slow
def test_a_diverging_replica_is_marked_alone_and_the_others_finish(tmp_path, group):
    dirs = make_group(tmp_path, hparams=(*HPARAMS[:2], dict(seed=2, optim=OptimConfig(lr=1e4))))
    results = train_group(dirs, progress=False)
    bad = results[str(dirs[2])]
    assert bad["state"] == "diverged" and runs.read_status(dirs[2])["state"] == "diverged"
    assert runs.read_result(dirs[2]) is None
    assert all(r["step"] < bad["step"] for r in read_metrics(dirs[2]))  # nothing after it
    for ref, got in zip(group[:2], dirs[:2], strict=True):  # lanes never mix
        assert runs.read_status(got)["state"] == "done"
        assert runs.read_result(got)["eval_loss"] == pytest.approx(
            runs.read_result(ref)["eval_loss"], rel=LOSS_RTOL)


@pytest.mark.slow
def test_local_launcher_groups_runs_by_itself_and_skips_done_ones(tmp_path, group):
    done = make_group(tmp_path, hparams=HPARAMS[:1])[0]
    for name in ("config.json", "status.json", "result.json", "metrics.jsonl"):
        shutil.copy(group[0] / name, done / name)
    todo = make_group(tmp_path, hparams=HPARAMS[1:])
    progress = local.run_local([done, *todo], workers=1, poll_s=0.1, group_replicas=True)
    assert all(progress.states[d] == "done" for d in [done, *todo])
    assert "trained in a replica group" in (todo[1] / "train.log").read_text()
    assert not (done / "train.log").exists()  # skipped, not retrained
    for ref, got in zip(group[1:], todo, strict=True):
        _close(ref, got)  # two lanes over the cores, not three on one device
