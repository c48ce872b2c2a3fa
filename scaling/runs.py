"""The run store: one directory per run, atomic records, status, and a lock per run.

Layout (docs/architecture.md): ``<runs_dir>/<sweep>/<run_name>/`` holding ``config.json``,
``status.json``, ``metrics.jsonl``, ``checkpoints/`` and ``result.json``. The run name is a
pure function of the resolved config, so a grid point always maps to the same directory;
that is the resume key. A sweep root may also hold ``sweep.json`` naming the spec (by hash)
that owns it, so a second spec cannot silently mix its runs into the first one's.

Every write goes through :mod:`scaling.fileio` (temp file, fsync, rename): a reader, or a
launcher started after a SIGKILL, never sees half a record.

Locking: :class:`RunLock` is an exclusive ``flock`` on ``<run>/.lock`` (the kernel drops it
when its holder dies) plus an owner record ``<run>/.lock.owner`` (pid, host, heartbeat).
A lock that is still held although its recorded owner is gone (a dead pid on this host, or
no heartbeat for ``stale_after`` seconds, e.g. a frozen process or a dead node on a shared
file system) is broken: the lock file is unlinked, so the old holder keeps a lock on an
inode nobody else can reach, and the taker locks a fresh one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from scaling.config import RunConfig
from scaling.errors import UserError
from scaling.fileio import atomic_write_json, read_json, read_json_object

STATES = ("pending", "running", "done", "diverged", "failed")
TERMINAL_STATES = ("done", "diverged", "failed")
STATUS_FIELDS = ("state", "pid", "host", "heartbeat", "step", "reason", "updated")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"

# A child process (the trainer) started by the holder of a run's lock names the run here,
# so its own RunLock on that run is satisfied by the parent's instead of deadlocking.
INHERITED_LOCK_ENV = "SCALING_RUN_LOCK"
DEFAULT_STALE_AFTER_S = 600.0


# ----------------------------------------------------------------------------- paths


def safe_child(base: str | os.PathLike, name: str) -> Path:
    """``base / name``, refusing a name that could leave ``base``.

    Refused: empty names, absolute paths, any ``..`` component, NUL bytes, and a path
    whose resolution (following symlinks that already exist) lands outside ``base``.
    """
    base = Path(base)
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UserError(f"{base}: invalid name {name!r}")
    rel = Path(name)
    if rel.is_absolute() or name.startswith(("/", "\\")):
        raise UserError(f"{base}: name {name!r} must be relative, not an absolute path")
    if any(part in ("..", "") for part in name.replace("\\", "/").split("/")) or ".." in rel.parts:
        raise UserError(f"{base}: name {name!r} must not contain '..' or empty components")
    child = base / rel
    base_resolved = base.resolve()
    resolved = child.resolve()
    if resolved != base_resolved and base_resolved not in resolved.parents:
        raise UserError(f"{child}: resolves to {resolved}, outside {base_resolved} (symlink?)")
    return child


def run_dir_for(runs_dir: str | os.PathLike, cfg: RunConfig) -> Path:
    """Where ``cfg`` lives: ``runs_dir/<sweep or "default">/<run_name>``."""
    sweep_dir = safe_child(runs_dir, cfg.sweep or "default")
    return safe_child(sweep_dir, cfg.run_name())


def list_run_dirs(runs_dir: str | os.PathLike) -> list[Path]:
    """Every directory under ``runs_dir`` holding a config.json, at depth 1 or 2, sorted.

    ``runs_dir`` may be a runs root (runs at depth 2) or one sweep's directory (depth 1).
    Symlinked directories pointing outside ``runs_dir`` are ignored.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    root_resolved = root.resolve()
    found: list[Path] = []

    def inside(p: Path) -> bool:
        r = p.resolve()
        return r == root_resolved or root_resolved in r.parents

    for first in sorted(root.iterdir()):
        if first.name.startswith(".") or not first.is_dir() or not inside(first):
            continue
        if (first / CONFIG_FILE).is_file():
            found.append(first)
            continue
        for second in sorted(first.iterdir()):
            if (second.name.startswith(".") or not second.is_dir() or not inside(second)):
                continue
            if (second / CONFIG_FILE).is_file():
                found.append(second)
    return sorted(found)


# ----------------------------------------------------------------------------- config


def derived_config_fields(cfg: RunConfig, recipe: str | None = None) -> dict:
    """The informational keys config.json carries beside ``RunConfig.to_dict()``."""
    from scaling.flops import flops_all, param_counts

    per_token = {k: float(v) for k, v in flops_all(cfg.model).items()}
    return {
        "run_name": cfg.run_name(),
        "param_counts": param_counts(cfg.model),
        "flops_per_token": per_token,
        "flops": {k: v * cfg.n_tokens for k, v in per_token.items()},
        "n_tokens": cfg.n_tokens,
        "recipe": recipe,
    }


def init_run_dir(runs_dir: str | os.PathLike, cfg: RunConfig, recipe: str | None = None) -> Path:
    """Create the run's directory with config.json and a pending status.json, if absent.

    Idempotent: an existing directory with the same config is returned untouched (its
    status, metrics and checkpoints kept). A different config under the same name raises.
    """
    run_dir = run_dir_for(runs_dir, cfg)
    config_path = run_dir / CONFIG_FILE
    if config_path.exists():
        existing = load_run_config(run_dir)
        if existing != cfg:
            raise UserError(f"{config_path}: exists with a different config than planned "
                            f"(edited by hand?); move it away or use another runs dir")
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(config_path, {**cfg.to_dict(), **derived_config_fields(cfg, recipe)})
        except PermissionError as e:
            raise UserError(f"{run_dir}: cannot write ({e.strerror})") from None
    if not (run_dir / STATUS_FILE).exists():
        write_status(run_dir, "pending")
    return run_dir


def read_config_json(run_dir: str | os.PathLike) -> dict:
    """config.json as a dict (with the derived keys)."""
    return read_json_object(Path(run_dir) / CONFIG_FILE, missing="not found (not a run directory)")


def load_run_config(run_dir: str | os.PathLike) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    return RunConfig.from_dict(read_config_json(run_dir), where=str(path))


def update_config_fields(run_dir: str | os.PathLike, **fields: Any) -> None:
    """Add or change derived keys of config.json (e.g. ``corpus_hash``); never RunConfig fields,
    which would change what the run is without changing its name."""
    from dataclasses import fields as dc_fields

    core = {f.name for f in dc_fields(RunConfig)}
    bad = sorted(set(fields) & core)
    if bad:
        raise ValueError(f"update_config_fields: {bad[0]!r} is a RunConfig field, not a derived one")
    d = read_config_json(run_dir)
    d.update(fields)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, d)


# ----------------------------------------------------------------------------- status


def _default_status() -> dict:
    return {"state": "pending", "pid": None, "host": None, "heartbeat": None, "step": None,
            "reason": None, "updated": None}


def read_status(run_dir: str | os.PathLike) -> dict:
    """status.json, with every contract key present. A missing file reads as pending."""
    path = Path(run_dir) / STATUS_FILE
    status = _default_status()
    try:
        d = read_json(path)
    except FileNotFoundError:
        return status
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("state") not in STATES:
        raise UserError(f"{path}: expected an object with state in {', '.join(STATES)}")
    status.update(d)
    return status


def write_status(run_dir: str | os.PathLike, state: str, **fields: Any) -> dict:
    """Atomically set the run's state, merging with the previous record.

    ``running`` records this process (pid, host) and a fresh heartbeat unless given;
    moving to a new state clears a stale ``reason``. Returns the record written.
    """
    if state not in STATES:
        raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
    previous = read_status(run_dir)
    now = time.time()
    status = dict(previous)
    if state != previous["state"]:
        status["reason"] = None
    if state == "running":
        status["pid"] = os.getpid()
        status["host"] = socket.gethostname()
        status["heartbeat"] = now
    status.update(fields)
    status["state"] = state
    status["updated"] = now
    atomic_write_json(Path(run_dir) / STATUS_FILE, status)
    return status


def heartbeat(run_dir: str | os.PathLike, step: int | None = None) -> None:
    """Mark the run alive at ``step`` (state running, this pid and host, heartbeat now)."""
    fields: dict[str, Any] = {} if step is None else {"step": int(step)}
    write_status(run_dir, "running", **fields)


def write_result(run_dir: str | os.PathLike, result: dict) -> None:
    atomic_write_json(Path(run_dir) / RESULT_FILE, result)


def read_result(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / RESULT_FILE
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` names a live (non-zombie) process on this host."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def effective_state(run_dir: str | os.PathLike, status: dict | None = None) -> str:
    """The state to act on: ``done`` if a result exists (a kill between the result and the
    status write loses nothing), ``interrupted`` for a running record whose process is gone
    (same host, dead pid) or silent for longer than the stale limit, else status.json's."""
    status = read_status(run_dir) if status is None else status
    state = status["state"]
    if state != "done" and state not in ("diverged", "failed") and (Path(run_dir) / RESULT_FILE).exists():
        return "done"
    if state == "running":
        same_host = status.get("host") == socket.gethostname()
        beat = status.get("heartbeat") or status.get("updated") or 0
        if (same_host and not pid_alive(status.get("pid"))) or time.time() - beat > DEFAULT_STALE_AFTER_S:
            return "interrupted"
    return state


def settle_state(run_dir: str | os.PathLike) -> str:
    """`effective_state`, and a finished run's status.json brought up to date: a kill between
    the result and the status write would otherwise leave it "running" for ever."""
    status = read_status(run_dir)
    state = effective_state(run_dir, status)
    if state == "done" and status["state"] != "done":
        write_status(run_dir, "done")
    return state


# ----------------------------------------------------------------------------- sweep ownership


def spec_hash(spec_dict: dict) -> str:
    """A stable hash of a sweep spec's content (its canonical JSON)."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_sweep_dir(runs_dir: str | os.PathLike, sweep: str, spec_digest: str,
                    spec_dict: dict | None = None, force: bool = False) -> Path:
    """Mark ``runs_dir/<sweep>`` as belonging to the spec with hash ``spec_digest``.

    A directory already claimed by a different spec is refused unless ``force`` (then the
    claim is moved over; runs of the old spec stay on disk, untouched).
    """
    sweep_dir = safe_child(runs_dir, sweep)
    path = sweep_dir / SWEEP_FILE
    record = {"name": sweep, "spec_hash": spec_digest, "spec": spec_dict, "claimed": time.time()}
    if path.exists():
        try:
            old = read_json(path)
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if old.get("spec_hash") == spec_digest:
            return sweep_dir
        if not force:
            raise UserError(f"{sweep_dir}: belongs to another spec (hash {old.get('spec_hash')}, this "
                            f"one {spec_digest}); use another --runs-dir or pass --force")
        record["previous_spec_hashes"] = [*old.get("previous_spec_hashes", []), old.get("spec_hash")]
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    except PermissionError as e:
        raise UserError(f"{sweep_dir}: cannot write ({e.strerror})") from None
    except OSError as e:
        raise UserError(f"{sweep_dir}: cannot write ({e.strerror or e})") from None
    return sweep_dir


def read_sweep_meta(sweep_dir: str | os.PathLike) -> dict | None:
    try:
        return read_json(Path(sweep_dir) / SWEEP_FILE)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# ----------------------------------------------------------------------------- lock


class RunLocked(RuntimeError):
    """The run is locked by a live owner."""


class RunLock:
    """Exclusive, crash-safe ownership of one run directory.

    ``with RunLock(run_dir): ...`` waits up to ``timeout`` seconds (``None``: forever,
    0: one try) and raises :class:`RunLocked` if a live owner keeps it. ``acquire(blocking=False)``
    returns a bool instead. A held lock whose owner is dead or silent (see the module
    docstring) is taken over. A process started by the holder with ``child_env()`` in its
    environment (the trainer under a launcher) finds the lock already held by its parent.
    """

    def __init__(self, run_dir: str | os.PathLike, timeout: float | None = 0,
                 stale_after: float = DEFAULT_STALE_AFTER_S, poll_interval: float = 0.1) -> None:
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self.stale_after = stale_after
        self.poll_interval = poll_interval
        self._lock_path = self.run_dir / LOCK_FILE
        self._owner_path = self.run_dir / OWNER_FILE
        self._make_lock = lambda path: FileLock(str(path), timeout=0, thread_local=False,
                                                is_singleton=False, fallback_to_soft=False)
        self._lock = None
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
        if self._inherited:
            self._inherited = False
            return
        if self._lock is None:
            return
        try:
            owner = self._read_owner()
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

    def owner(self) -> dict | None:
        return self._read_owner()

    def __enter__(self) -> RunLock:
        if not self.acquire(blocking=self.timeout != 0, timeout=self.timeout):
            owner = self._read_owner() or {}
            raise RunLocked(f"{self.run_dir}: locked by pid {owner.get('pid')} on {owner.get('host')}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals

    def _parent_holds(self) -> bool:
        if os.environ.get(INHERITED_LOCK_ENV) != str(self.run_dir.resolve()):
            return False
        owner = self._read_owner() or {}
        return owner.get("pid") == os.getppid() and owner.get("host") == socket.gethostname()

    def _try_lock(self) -> bool:
        from filelock import Timeout

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

    def _read_owner(self) -> dict | None:
        try:
            d = read_json(self._owner_path)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return d if isinstance(d, dict) else None

    def _owner_gone(self, owner: dict | None = None) -> bool:
        owner = self._read_owner() if owner is None else owner
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
        from filelock import Timeout

        guard = self._make_lock(self.run_dir / ".lock.break")
        try:
            guard.acquire(timeout=5)
        except Timeout:
            return
        try:
            before = self._read_owner()
            if not self._owner_gone(before):
                return
            # A new holder writes its record right after winning the flock; wait a moment
            # so a record read in that window is not mistaken for a dead one.
            time.sleep(min(0.2, self.poll_interval * 2))
            if self._read_owner() != before or not self._owner_gone(before):
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
        status = read_json(run_dir / STATUS_FILE)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(status, dict) or status.get("state") != "running":
        return None
    return status.get("heartbeat") or status.get("updated")
