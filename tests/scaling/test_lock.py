"""The run lock: exclusive, released on death, taken over from dead or silent owners,
inherited by a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scaling import lock, runs

PY = sys.executable


HOLDER = textwrap.dedent("""
    import os, sys, time
    from scaling.lock import RunLock
    lock = RunLock(sys.argv[1])
    assert lock.acquire(blocking=False)
    print("ready", os.getpid(), flush=True)
    time.sleep(60)
""")


def _hold(run_dir: Path) -> subprocess.Popen:
    """Start a process holding the run's lock."""
    proc = subprocess.Popen([PY, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("ready")
    return proc


def test_lock_is_exclusive_and_released(tmp_path):
    a, b = lock.RunLock(tmp_path), lock.RunLock(tmp_path)
    assert a.acquire(blocking=False)
    assert a.owner()["pid"] == os.getpid()
    assert not b.acquire(blocking=False)
    with pytest.raises(lock.RunLocked):
        with lock.RunLock(tmp_path):
            pass
    a.release()
    assert a.owner() is None
    with b:
        assert b.held
    assert not b.held


def test_lock_of_a_killed_holder_is_free(tmp_path):
    proc = _hold(tmp_path)
    try:
        assert not lock.RunLock(tmp_path).acquire(blocking=False)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert lock.RunLock(tmp_path).acquire(blocking=True, timeout=5)
    finally:
        proc.kill()
        proc.wait()


RAW_HOLDER = textwrap.dedent("""
    import fcntl, json, os, socket, sys, time
    # holds the flock while the owner record names another, dead process: what a lock
    # inherited by a forked orphan, or one left on a shared file system, looks like
    fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(os.path.join(sys.argv[1], ".lock.owner"), "w") as f:
        json.dump({"pid": int(sys.argv[2]), "host": socket.gethostname(), "token": "x",
                   "heartbeat": time.time()}, f)
    print("ready", os.getpid(), flush=True)
    time.sleep(60)
""")


def test_lock_held_for_a_dead_owner_is_taken_over(tmp_path):
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    assert not runs.pid_alive(int(dead.stdout))
    proc = subprocess.Popen([PY, "-c", RAW_HOLDER, str(tmp_path), dead.stdout.strip()],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        import fcntl

        with open(tmp_path / ".lock", "rb") as f:  # the flock is really held
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        taker = lock.RunLock(tmp_path)
        assert taker.acquire(blocking=False)
        assert taker.owner()["pid"] == os.getpid()
        assert not lock.RunLock(tmp_path).acquire(blocking=False)
        taker.release()
    finally:
        proc.kill()
        proc.wait()


def test_lock_with_a_stale_heartbeat_is_taken_over(tmp_path):
    proc = _hold(tmp_path)
    try:
        assert not lock.RunLock(tmp_path, stale_after=60).acquire(blocking=False)
        time.sleep(0.3)
        taker = lock.RunLock(tmp_path, stale_after=0.2)
        assert taker.acquire(blocking=False)
        assert taker.owner()["pid"] == os.getpid()
        taker.release()
    finally:
        proc.kill()
        proc.wait()


def test_child_inherits_the_parents_lock(tmp_path):
    code = ("import sys; from scaling.lock import RunLock; l = RunLock(sys.argv[1]); "
            "print(l.acquire(blocking=False))")
    with lock.RunLock(tmp_path) as held:
        plain = subprocess.run([PY, "-c", code, str(tmp_path)], capture_output=True, text=True)
        env = {**os.environ, **held.child_env()}
        child = subprocess.run([PY, "-c", code, str(tmp_path)], capture_output=True, text=True,
                               env=env)
    assert plain.stdout.strip() == "False"
    assert child.stdout.strip() == "True"
