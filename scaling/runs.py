"""The run store: one directory per run, its records written atomically and read back typed.

Layout (docs/architecture.md): ``<runs_dir>/<sweep or "default">/<run_name>/`` holding ``config.json`` (the
RunConfig plus derived keys: parameter counts, FLOPs per convention, tokens, recipe),
``status.json``, ``metrics.jsonl``, ``checkpoints/`` and, once finished, ``result.json``.
The run name is a pure function of the resolved config, so a grid point always maps to the
same directory; that is the resume key.

Every write goes through :mod:`scaling.fileio` (temp file, fsync, rename): a reader, or a
launcher started after a SIGKILL, never sees half a record. Every reader lists runs with
:func:`iter_runs` (one rule, :func:`list_run_dirs`) and gets a :class:`RunRecord` per run; a
run whose records cannot be read is a record in state ``unreadable`` with the reason, never
an exception. A run's lock is :mod:`scaling.lock`.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

from scaling.config import RunConfig
from scaling.errors import UserError
from scaling.fileio import atomic_write_json, read_json_object, read_jsonl
from scaling.flops import flops_all, param_counts

STATES = ("pending", "running", "done", "diverged", "failed")
TERMINAL_STATES = ("done", "diverged", "failed")
STATUS_FIELDS = ("state", "pid", "host", "heartbeat", "step", "reason", "updated")

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
DEFAULT_STALE_AFTER_S = 600.0  # a running record silent this long is taken for dead


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
    Hidden entries, and symlinked directories resolving outside ``runs_dir``, are ignored.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    root_resolved = root.resolve()

    def children(d: Path) -> list[Path]:
        return [c for c in sorted(d.iterdir()) if not c.name.startswith(".") and c.is_dir()
                and (root_resolved == c.resolve() or root_resolved in c.resolve().parents)]

    found: list[Path] = []
    for first in children(root):
        if (first / CONFIG_FILE).is_file():
            found.append(first)
        else:
            found.extend(c for c in children(first) if (c / CONFIG_FILE).is_file())
    return sorted(found)


# ----------------------------------------------------------------------------- config


def derived_config_fields(cfg: RunConfig, recipe: str | None = None) -> dict:
    """The informational keys config.json carries beside ``RunConfig.to_dict()``."""
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
        if load_run_config(run_dir) != cfg:
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
    bad = sorted(set(fields) & {f.name for f in dc_fields(RunConfig)})
    if bad:
        raise ValueError(f"update_config_fields: {bad[0]!r} is a RunConfig field, not a derived one")
    d = read_config_json(run_dir)
    d.update(fields)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, d)


# ----------------------------------------------------------------------------- status, result


def _optional_object(path: Path) -> dict | None:
    """A JSON object record, None when the file is absent; invalid JSON is a UserError."""
    if not path.exists():
        return None
    return read_json_object(path)


def read_status(run_dir: str | os.PathLike) -> dict:
    """status.json, with every contract key present. A missing file reads as pending."""
    path = Path(run_dir) / STATUS_FILE
    status = {**dict.fromkeys(STATUS_FIELDS), "state": "pending"}
    d = _optional_object(path)
    if d is not None:
        if d.get("state") not in STATES:
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
    status = read_status(run_dir)
    now = time.time()
    if state != status["state"]:
        status["reason"] = None
    if state == "running":
        status.update(pid=os.getpid(), host=socket.gethostname(), heartbeat=now)
    status.update(fields)
    status.update(state=state, updated=now)
    atomic_write_json(Path(run_dir) / STATUS_FILE, status)
    return status


def heartbeat(run_dir: str | os.PathLike, step: int | None = None) -> None:
    """Mark the run alive at ``step`` (state running, this pid and host, heartbeat now)."""
    write_status(run_dir, "running", **({} if step is None else {"step": int(step)}))


def write_result(run_dir: str | os.PathLike, result: dict) -> None:
    atomic_write_json(Path(run_dir) / RESULT_FILE, result)


def read_result(run_dir: str | os.PathLike) -> dict | None:
    return _optional_object(Path(run_dir) / RESULT_FILE)


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


def _effective(status: dict, has_result: bool) -> str:
    state = status["state"]
    if state in ("pending", "running") and has_result:
        return "done"  # killed between writing the result and the status: nothing is lost
    if state == "running":
        same_host = status.get("host") == socket.gethostname()
        beat = status.get("heartbeat") or status.get("updated") or 0
        if (same_host and not pid_alive(status.get("pid"))) or time.time() - beat > DEFAULT_STALE_AFTER_S:
            return "interrupted"
    return state


def effective_state(run_dir: str | os.PathLike, status: dict | None = None) -> str:
    """The state to act on: ``done`` if a result exists (a kill between the result and the
    status write loses nothing), ``interrupted`` for a running record whose process is gone
    (same host, dead pid) or silent for longer than the stale limit, else status.json's."""
    status = read_status(run_dir) if status is None else status
    return _effective(status, (Path(run_dir) / RESULT_FILE).exists())


def settle_state(run_dir: str | os.PathLike) -> str:
    """`effective_state`, and a finished run's status.json brought up to date: a kill between
    the result and the status write would otherwise leave it "running" for ever."""
    status = read_status(run_dir)
    state = effective_state(run_dir, status)
    if state == "done" and status["state"] != "done":
        write_status(run_dir, "done")
    return state


# ----------------------------------------------------------------------------- typed records


def _number(x: Any) -> Any:
    """A finite real number from a record (ints stay ints), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return x


def _numbers(d: Any) -> dict[str, float]:
    return {str(k): v for k, v in d.items() if _number(v) is not None} if isinstance(d, dict) else {}


def _table(d: dict, key: str) -> dict:
    return d[key] if isinstance(d.get(key), dict) else {}


def _of_type(x: Any, kind: type) -> Any:
    return x if isinstance(x, kind) else None


@dataclass(frozen=True)
class RunResult:
    """result.json: what a finished run measured (None where the trainer did not write it)."""

    eval_loss: float | None = None
    eval_bpb: float | None = None
    n_params: int | None = None
    n_params_non_embedding: int | None = None
    n_tokens: int | None = None
    flops: float | None = None  # under the run's convention
    flops_by_convention: dict[str, float] = field(default_factory=dict)
    budget: float | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None  # steady-state training rate

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        return cls(**{f.name: _number(d.get(f.name)) for f in dc_fields(cls)
                      if f.name != "flops_by_convention"},
                   flops_by_convention=_numbers(d.get("flops_by_convention")))


@dataclass(frozen=True)
class RunRecord:
    """One run as every reader sees it: where it is, its resolved config, state and result."""

    run_dir: Path
    name: str  # the config's run name (else the run directory's name)
    sweep: str  # the config's sweep (else the directory it sits in; "default" for no sweep)
    state: str  # effective_state, or "unreadable" (then `reason` says why)
    reason: str | None = None
    param_counts: dict[str, float] = field(default_factory=dict)  # by group, "total" included
    n_tokens: int | None = None
    flops: dict[str, float] = field(default_factory=dict)  # whole run, per FLOP convention
    convention: str = "6N"  # the one that sized the run
    budget: float | None = None
    vocab_size: int | None = None
    seq_len: int | None = None
    n_layers: int | None = None
    d_model: int | None = None
    mlp: str | None = None
    tie_embeddings: bool | None = None
    qk_norm: bool | None = None
    shape_recipe: str | None = None  # the scaling.shapes recipe's name the run was sized by
    seed: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    n_steps: int | None = None
    step: int | None = None  # last step status.json reported
    host: str | None = None
    pid: int | None = None
    heartbeat: float | None = None
    result: RunResult | None = None
    measured_tokens_per_s: float | None = None  # from metrics.jsonl, when asked for

    @property
    def n_params(self) -> float | None:
        """Total parameters: the trainer's count, else the planned one."""
        return (self.result and self.result.n_params) or self.param_counts.get("total")

    @property
    def run_flops(self) -> float | None:
        """Planned FLOPs of the whole run under its own convention."""
        return self.flops.get(self.convention)


def measured_tokens_per_s(run_dir: str | os.PathLike) -> float | None:
    """Median logged tokens/s in metrics.jsonl, the first log left out when there are
    others (it includes compilation)."""
    rates = [r["tokens_per_s"] for r in read_jsonl(Path(run_dir) / METRICS_FILE)
             if (_number(r.get("tokens_per_s")) or 0) > 0]
    return float(statistics.median(rates[1:] or rates)) if rates else None


def read_run(run_dir: str | os.PathLike, *, throughput: bool = False) -> RunRecord:
    """The run's records as a RunRecord; with `throughput`, its measured rate too."""
    run_dir = Path(run_dir)
    where: dict[str, Any] = dict(run_dir=run_dir, name=run_dir.name, sweep=run_dir.parent.name)
    try:
        config, status, result = read_config_json(run_dir), read_status(run_dir), read_result(run_dir)
    except UserError as e:
        return RunRecord(**where, state="unreadable", reason=str(e))
    for key, config_key in (("name", "run_name"), ("sweep", "sweep")):  # as the run was named
        if isinstance(config.get(config_key), str) and config[config_key]:
            where[key] = config[config_key]
    state = _effective(status, result is not None)
    model, optim = _table(config, "model"), _table(config, "optim")
    convention = config.get("convention")
    return RunRecord(
        **where, state=state, reason=status.get("reason") if state != "done" else None,
        param_counts=_numbers(config.get("param_counts")), n_tokens=_number(config.get("n_tokens")),
        flops=_numbers(config.get("flops")),
        convention=convention if isinstance(convention, str) else "6N",
        budget=_number(config.get("budget")),
        **{k: _number(model.get(k)) for k in ("vocab_size", "seq_len", "n_layers", "d_model")},
        mlp=_of_type(model.get("mlp"), str), tie_embeddings=_of_type(model.get("tie_embeddings"), bool),
        qk_norm=_of_type(model.get("qk_norm"), bool),
        shape_recipe=_of_type(config.get("shape_recipe"), str),
        seed=_number(config.get("seed")), lr=_number(optim.get("lr")),
        batch_size=_number(config.get("batch_size")), n_steps=_number(config.get("n_steps")),
        step=_number(status.get("step")), host=status.get("host"),
        pid=_number(status.get("pid")), heartbeat=_number(status.get("heartbeat")),
        result=None if result is None else RunResult.from_dict(result),
        measured_tokens_per_s=measured_tokens_per_s(run_dir) if throughput else None)


def iter_runs(runs_dir: str | os.PathLike, *, throughput: bool = False) -> Iterator[RunRecord]:
    """A RunRecord for every run under ``runs_dir`` (a runs root or one sweep's directory),
    in `list_run_dirs` order. Raises UserError at once when ``runs_dir`` is not a directory."""
    dirs = list_run_dirs(runs_dir)
    return (read_run(d, throughput=throughput) for d in dirs)
