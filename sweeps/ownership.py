"""Which spec owns a sweep directory: ``<runs_dir>/<sweep>/sweep.json`` names it by hash, so a
second spec under the same name cannot silently mix its runs into the first one's."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from scaling.errors import UserError
from scaling.fileio import atomic_write_json, read_json
from scaling.runs import safe_child

SWEEP_FILE = "sweep.json"


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
    record: dict = {"name": sweep, "spec_hash": spec_digest, "spec": spec_dict, "claimed": time.time()}
    if path.exists():
        try:
            old = read_json(path)
        except ValueError:  # not JSON: claimed by nobody we can name
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
    except OSError as e:
        raise UserError(f"{sweep_dir}: cannot write ({e.strerror or e})") from None
    return sweep_dir
