"""Sweep ownership: sweep.json claims a sweep directory for one spec."""

from __future__ import annotations

import os

import pytest

from scaling.errors import UserError
from scaling.fileio import read_json
from sweeps import ownership


def test_claim_sweep_dir(tmp_path):
    d = ownership.claim_sweep_dir(tmp_path, "demo", "h1", {"name": "demo"})
    assert read_json(d / ownership.SWEEP_FILE)["spec_hash"] == "h1"
    assert ownership.claim_sweep_dir(tmp_path, "demo", "h1") == d
    with pytest.raises(UserError, match="belongs to another spec"):
        ownership.claim_sweep_dir(tmp_path, "demo", "h2")
    ownership.claim_sweep_dir(tmp_path, "demo", "h2", force=True)
    meta = read_json(d / ownership.SWEEP_FILE)
    assert meta["spec_hash"] == "h2" and meta["previous_spec_hashes"] == ["h1"]
    assert ownership.spec_hash({"a": 1, "b": 2}) == ownership.spec_hash({"b": 2, "a": 1})
    assert ownership.spec_hash({"a": 1}) != ownership.spec_hash({"a": 2})


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_runs_dir_is_a_user_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write"):
            ownership.claim_sweep_dir(tmp_path, "demo", "h1")
    finally:
        tmp_path.chmod(0o700)
