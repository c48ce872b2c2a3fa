"""scaling.host_env: the CPU tuning `scaling train` applies to its own process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scaling import host_env
from scaling.host_env import HUGEPAGE_TUNABLE, tuned_environ


def test_opt_out_changes_nothing(monkeypatch):
    monkeypatch.setattr(host_env, "hugepages_help", lambda: True)
    env = {"SCALING_CPU_TUNING": "0", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert tuned_environ(env) == env


def test_hugepage_tunable_joins_existing_tunables(monkeypatch):
    monkeypatch.setattr(host_env, "hugepages_help", lambda: True)
    env = tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGEPAGE_TUNABLE}=1"
    assert tuned_environ({})["GLIBC_TUNABLES"] == f"{HUGEPAGE_TUNABLE}=1"
    mine = {"GLIBC_TUNABLES": f"{HUGEPAGE_TUNABLE}=0"}
    assert tuned_environ(mine)["GLIBC_TUNABLES"] == f"{HUGEPAGE_TUNABLE}=0"
    monkeypatch.setattr(host_env, "hugepages_help", lambda: False)
    assert "GLIBC_TUNABLES" not in tuned_environ({})


CHILD = """
import os, sys
print("pid", os.getpid(), flush=True)
from scaling.host_env import reexec_tuned
reexec_tuned()
print("tuned", os.getpid(), os.environ.get("GLIBC_TUNABLES"))
"""


@pytest.mark.skipif(not host_env.hugepages_help(), reason="glibc < 2.35 or THP not in madvise mode")
def test_reexec_keeps_the_pid_and_starts_with_the_tunable():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    # The first image prints its pid and re-executes; the second prints it again (the
    # tunable is now there, so it does not re-execute) and reports its environment.
    assert [line.split()[0] for line in out] == ["pid", "pid", "tuned"], out
    pids = {line.split()[1] for line in out}
    assert len(pids) == 1
    assert out[-1].split()[2:] == [f"{HUGEPAGE_TUNABLE}=1"]
