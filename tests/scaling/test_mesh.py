import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import REPO, cli_env, make_run, read_metrics  # noqa: E402

from scaling import mesh as mesh_lib
from scaling.errors import UserError
from scaling.train import train_run

FAKE_MESH = SimpleNamespace(shape={"data": 2, "fsdp": 2})


def test_logical_names_map_to_mesh_axes():
    rules = mesh_lib.RULES
    assert mesh_lib.logical_spec(("vocab", "embed"), (64, 32), FAKE_MESH, rules) == P(None, "fsdp")
    assert mesh_lib.logical_spec(("layers", "embed", "heads", None), (2, 32, 2, 16), FAKE_MESH,
                                 rules) == P(None, "fsdp", None, None)
    # a dimension the axis does not divide stays replicated instead of failing
    assert mesh_lib.logical_spec(("embed",), (33,), FAKE_MESH, rules) == P(None)
    assert mesh_lib.logical_spec(None, (4,), FAKE_MESH, rules) == P()
    # one mesh axis shards at most one dimension of an array
    assert mesh_lib.logical_spec(("embed", "embed"), (4, 4), FAKE_MESH, rules) == P("fsdp", None)


def test_batch_not_divisible_by_the_devices_names_batch_size():
    mesh_lib.check_batch(8, 2, FAKE_MESH)  # micro-batch 4 over 4 devices: fine
    with pytest.raises(UserError, match="^batch_size: .*4 devices"):
        mesh_lib.check_batch(6, 1, FAKE_MESH)
    with pytest.raises(UserError, match="^batch_size"):
        mesh_lib.check_batch(8, 4, FAKE_MESH)  # micro-batch 2 < 4 devices
    with pytest.raises(UserError, match="^grad_accum"):
        mesh_lib.check_batch(8, 3, FAKE_MESH)


# Runs with 4 host devices; the flag must be set before jax is imported, hence a subprocess.
FOUR_DEVICES = r"""
import json, sys
import jax, numpy as np
from scaling import mesh as mesh_lib
from scaling.checkpoint import Checkpointer
from scaling.runs import load_run_config
from scaling.train import train_run
from scaling.train_step import TrainState
assert len(jax.devices()) == 4, jax.devices()
dp, fsdp, odd = sys.argv[1:4]
train_run(dp, progress=False)
train_run(fsdp, progress=False, fsdp=2)
# save -> restore under the real mesh keeps the sharded layout
ts = TrainState(load_run_config(fsdp), mesh_lib.make_mesh(2))
with Checkpointer(fsdp + "/checkpoints") as ckpt:
    _, state, _ = ckpt.restore(ts.abstract)
wq = state["params"]["blocks"]["wq"]
mu = state["opt_state"][1][0].mu["embed"]
specs = {"wq": str(wq.sharding.spec), "mu_embed": str(mu.sharding.spec),
         "wq_shards": len({str(s.index) for s in wq.addressable_shards})}
try:
    train_run(odd, progress=False)
    specs["odd"] = "no error"
except Exception as e:
    specs["odd"] = f"{type(e).__name__}: {e}"
print(json.dumps(specs))
"""


@pytest.mark.slow
def test_data_parallel_and_fsdp_match_one_device(tmp_path):
    cache = tmp_path / "cache"
    env = cli_env(cache, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    run = dict(n_steps=16, log_every=2)
    single, dp, fsdp = (make_run(tmp_path / name, **run) for name in ("one", "dp", "fsdp"))
    odd = make_run(tmp_path / "odd", batch_size=6, **run)
    out = subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(dp), str(fsdp), str(odd)],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    specs = json.loads(out.stdout.strip().splitlines()[-1])
    assert specs["wq"] == str(P(None, "fsdp", None, None)) and specs["wq_shards"] == 2
    assert specs["mu_embed"] == str(P(None, "fsdp"))  # optimiser state sharded like params
    assert specs["odd"].startswith("UserError: batch_size")

    import os
    os.environ["SCALING_CACHE"] = str(cache)
    try:
        train_run(single, progress=False)
    finally:
        os.environ.pop("SCALING_CACHE")
    ref = np.array([r["train_loss"] for r in read_metrics(single)])
    for other in (dp, fsdp):
        got = np.array([r["train_loss"] for r in read_metrics(other)])
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
        assert json.loads((other / "result.json").read_text())["eval_loss"] == pytest.approx(
            json.loads((single / "result.json").read_text())["eval_loss"], abs=2e-5)
