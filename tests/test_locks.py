"""The accelerator lock (requirements-cuda.lock, synced by `make install-gpu`) is in step
with pyproject and requirements.lock, without a GPU; the tracking extra is in the dev lock."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version \\` line, each followed by its hashes."""
    text = path.read_text()
    found = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+) \\\n    --hash=sha256:", text, re.M))
    every = re.findall(r"^([A-Za-z0-9_.\-]+)==", text, re.M)
    assert len(found) == len(every), f"{path.name}: a pin without --hash"
    return {name.lower().replace("_", "-"): version for name, version in found.items()}


def extra(name: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["optional-dependencies"][name]]


def test_cuda_lock_pins_the_cuda_extra_at_the_cpu_locks_jax():
    cuda, cpu = pins(REPO / "requirements-cuda.lock"), pins(REPO / "requirements.lock")
    header = (REPO / "requirements-cuda.lock").read_text().splitlines()[:2]
    assert "uv pip compile --generate-hashes" in header[1] and "--extra cuda" in header[1]
    assert "-c requirements.lock" in header[1]
    for req in extra("cuda"):
        assert req.name in cuda and req.specifier.contains(cuda[req.name]), req
        if req.name == "jax" and "cuda12" in req.extras:
            # jax[cuda12] is the plugin and its PJRT at jax's own version, and the CUDA wheels
            assert cuda["jax-cuda12-plugin"] == cuda["jax-cuda12-pjrt"] == cuda["jax"]
            assert {"nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-nccl-cu12"} <= set(cuda)
    assert cuda["jax"] == cpu["jax"] and cuda["jaxlib"] == cpu["jaxlib"]
    # the project's own dependencies too, at the CPU lock's versions
    shared = set(cuda) & set(cpu)
    assert {n: cuda[n] for n in shared} == {n: cpu[n] for n in shared}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {Requirement(r).name.lower() for r in project["dependencies"]} <= set(cuda)


def test_tracking_extra_is_in_the_dev_lock():
    dev = pins(REPO / "requirements-dev.lock")
    for req in extra("tracking"):
        assert req.name in dev and req.specifier.contains(dev[req.name]), req


def test_make_install_gpu_syncs_the_cuda_lock():
    out = subprocess.run(["make", "-n", "install-gpu"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert re.search(r"pip sync .*requirements-cuda\.lock requirements-dev\.lock", out)
