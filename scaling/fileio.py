"""Atomic file writes and tolerant readers: a reader never sees half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling.errors import UserError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        sync_file(path)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename still happened


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`.

    On any failure (full disk, kill before rename) the previous file is untouched and
    the temp file is removed where possible.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a runs dir shared on a cluster needs the usual mode.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # name the file the user knows, not the temp file
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in fit results; keep JSON free of pickled types.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    """JSON with NaN/inf written as null (strict JSON), numpy types converted."""
    return json.dumps(_finite(obj), indent=indent, default=_json_default, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):
        return _finite(obj.tolist())
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: str | os.PathLike, *, missing: str = "no such file",
                     expected: str = "a JSON object") -> dict:
    """A user-supplied JSON object, or a one-line UserError naming the file and the problem."""
    try:
        d = read_json(path)
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e.__class__.__name__} at "
                        f"{getattr(e, 'pos', '?')})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected {expected}")
    return d


def append_jsonl(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> None:
    """Append one line (fsynced when durable). A kill mid-write leaves at most a truncated
    last line, which `read_jsonl` skips. A writer that appends often (a run's metrics: an
    fsync costs ~1 ms, a tiny model's log interval a few) passes durable=False and calls
    `sync_file` before anything that vouches for the lines, such as a checkpoint."""
    line = to_json(obj, indent=None) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        if durable:
            os.fsync(f.fileno())


def sync_file(path: str | os.PathLike) -> None:
    """fsync a file appended to without it; nothing when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the complete objects of a JSONL file; a truncated or corrupt last line is skipped."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if i >= len(lines) - 2:  # only the last line may be cut by a crash
                return
            raise UserError(f"{path}: line {i + 1}: not valid JSON ({e.msg})") from None
