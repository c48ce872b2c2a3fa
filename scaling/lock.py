"""A run's lock: exclusive, crash-safe ownership of one run directory.

:class:`RunLock` is an exclusive ``flock`` on ``<run>/.lock`` (the kernel drops it when its
holder dies) plus an owner record ``<run>/.lock.owner`` (pid, host, heartbeat). A lock that
is still held although its recorded owner is gone (a dead pid on this host, or no heartbeat
for ``stale_after`` seconds, e.g. a frozen process or a dead node on a shared file system)
is broken: the lock file is unlinked, so the old holder keeps a lock on an inode nobody else
can reach, and the taker locks a fresh one.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

from scaling.errors import UserError
from scaling.fileio import atomic_write_json, read_json
from scaling.runs import DEFAULT_STALE_AFTER_S, pid_alive, read_status

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"
# A child process (the trainer) started by the holder of a run's lock names the run here,
# so its own RunLock on that run is satisfied by the parent's instead of deadlocking.
INHERITED_LOCK_ENV = "SCALING_RUN_LOCK"


class RunLocked(RuntimeError):
    """The run is locked by a live owner."""


class RunLock:
    """``with RunLock(run_dir): ...`` waits up to ``timeout`` seconds (``None``: forever, 0:
    one try) and raises :class:`RunLocked` if a live owner keeps it; ``acquire(blocking=False)``
    returns a bool instead. A process started by the holder with ``child_env()`` in its
    environment (the trainer under a launcher) finds the lock already held by its parent."""

    def __init__(self, run_dir: str | os.PathLike, timeout: float | None = 0,
                 stale_after: float = DEFAULT_STALE_AFTER_S, poll_interval: float = 0.1) -> None:
        self.run_dir = Path(run_dir)
        self.timeout, self.stale_after, self.poll_interval = timeout, stale_after, poll_interval
        self._lock_path = self.run_dir / LOCK_FILE
        self._owner_path = self.run_dir / OWNER_FILE
        self._make_lock = lambda path: FileLock(str(path), timeout=0, thread_local=False,
                                                is_singleton=False, fallback_to_soft=False)
        self._lock: FileLock | None = None
        self._token: str | None = None
        self._inherited = False

    # -- public

    @property
    def held(self) -> bool:
        return self._inherited or self._lock is not None

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if self.held:
            return True
        if self._parent_holds():
            self._inherited = True
            return True
        timeout = self.timeout if timeout is None and blocking else timeout
        deadline = None if (blocking and timeout is None) else time.monotonic() + (timeout or 0)
        while True:
            if self._try_lock():
                return True
            if self._owner_gone():
                self._break()
                if self._try_lock():
                    return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(self.poll_interval)

    def release(self) -> None:
        if self._inherited or self._lock is None:
            self._inherited = False
            return
        try:
            owner = self.owner()
            if owner and owner.get("token") == self._token:
                self._owner_path.unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None
            self._token = None

    def touch(self) -> None:
        """Refresh this holder's heartbeat so it is never taken for stale."""
        if self._lock is not None:
            self._write_owner()

    def child_env(self) -> dict[str, str]:
        """Environment additions for a child that works on the run under this lock."""
        return {INHERITED_LOCK_ENV: str(self.run_dir.resolve())}

    def __enter__(self) -> RunLock:
        if not self.acquire(blocking=self.timeout != 0, timeout=self.timeout):
            owner = self.owner() or {}
            raise RunLocked(f"{self.run_dir}: locked by pid {owner.get('pid')} on {owner.get('host')}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals

    def _parent_holds(self) -> bool:
        if os.environ.get(INHERITED_LOCK_ENV) != str(self.run_dir.resolve()):
            return False
        owner = self.owner() or {}
        return owner.get("pid") == os.getppid() and owner.get("host") == socket.gethostname()

    def _try_lock(self) -> bool:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.run_dir}: cannot create ({e.strerror or e})") from None
        lock = self._make_lock(self._lock_path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        except PermissionError as e:
            raise UserError(f"{self._lock_path}: cannot lock ({e.strerror or e})") from None
        self._lock = lock
        self._token = uuid.uuid4().hex
        try:
            self._write_owner()
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        return True

    def _write_owner(self) -> None:
        atomic_write_json(self._owner_path, {"pid": os.getpid(), "host": socket.gethostname(),
                                             "token": self._token, "heartbeat": time.time()})

    def owner(self) -> dict | None:
        """The holder's record (pid, host, token, heartbeat), None when there is none."""
        try:
            d = read_json(self._owner_path)
        except (OSError, ValueError):  # absent, or half-written by a holder that died
            return None
        return d if isinstance(d, dict) else None

    def _owner_gone(self, owner: dict | None = None) -> bool:
        owner = self.owner() if owner is None else owner
        if not owner:
            # Held with no owner record: a holder between flock and writing its record, or
            # one from before records existed. Only a long silence of the run itself counts.
            beat = _last_status_beat(self.run_dir)
            return beat is not None and time.time() - beat > self.stale_after
        if owner.get("host") == socket.gethostname() and not pid_alive(owner.get("pid")):
            return True
        beat = max(owner.get("heartbeat") or 0, _last_status_beat(self.run_dir) or 0)
        return time.time() - beat > self.stale_after

    def _break(self) -> None:
        """Unlink a dead owner's lock file, under a short-lived lock so only one taker does it."""
        guard = self._make_lock(self.run_dir / ".lock.break")
        try:
            guard.acquire(timeout=5)
        except Timeout:
            return
        try:
            before = self.owner()
            if not self._owner_gone(before):
                return
            # A new holder writes its record right after winning the flock; wait a moment
            # so a record read in that window is not mistaken for a dead one.
            time.sleep(min(0.2, self.poll_interval * 2))
            if self.owner() != before or not self._owner_gone(before):
                return
            probe = self._make_lock(self._lock_path)
            try:
                probe.acquire(timeout=0)
            except Timeout:
                self._lock_path.unlink(missing_ok=True)
                self._owner_path.unlink(missing_ok=True)
            else:
                probe.release()  # freed meanwhile: nothing to break
        finally:
            guard.release()


def _last_status_beat(run_dir: Path) -> float | None:
    try:
        status = read_status(run_dir)
    except UserError:
        return None
    return status["heartbeat"] or status["updated"] if status["state"] == "running" else None
