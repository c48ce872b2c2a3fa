"""What was computed from data files' bytes, remembered by the files' stat signatures.

Every run start checks which corpus it trains on by hashing the bytes of the corpus files
(scaling.sources), and a `tokens:` source also scans every id against the vocabulary: for
a corpus of G bytes that is G / (1-2 GB/s) of reading per run, in every process of a sweep
or a cluster job. `remembered` keeps such a result in the token cache, under
`file-memo/<digest>.json`, keyed by what was computed and, per file, its resolved path,
size, mtime, ctime, inode and device, and returns it without reading the files again while
none of them changed.

Why these fields are enough: any write to a file, and any later change of its mtime
(`touch`, `os.utime`, `rsync -t`), moves its ctime, which no user tool can set back; a
copy or a replaced file has another inode. A result is remembered only when the files did
not change while it was computed and their last change is older than the computation by
more than a filesystem's timestamp granularity (2 s), so a file still being written, or
written again within one timestamp tick, is read again next time. An unreadable or foreign
memo file counts as absent; a cache that cannot be written just remembers nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scaling.fileio import atomic_write_json

MEMO_DIR = "file-memo"
MEMO_VERSION = 1
RACY_NS = 2_000_000_000  # coarsest common timestamp granularity (FAT: 2 s)


def stat_signature(path: Path) -> dict:
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "ino": st.st_ino, "dev": st.st_dev}


def remembered(cache: Path | None, what: str, files: Sequence[Path],
               compute: Callable[[], str]) -> str:
    """compute(), a string that depends only on `what` and the bytes of `files`, or the
    value remembered for the same `what` and unchanged files. No cache: always computed."""
    if cache is None:
        return compute()
    before = [stat_signature(p) for p in files]
    key = {"version": MEMO_VERSION, "what": what, "files": before}
    memo = Path(cache) / MEMO_DIR / (hashlib.sha256(json.dumps(key, sort_keys=True).encode())
                                     .hexdigest()[:32] + ".json")
    try:
        record = json.loads(memo.read_text())
        if record["key"] == key and isinstance(record["value"], str):
            return record["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, damaged or foreign: compute
    started_ns = time.time_ns()
    value = compute()
    settled = all(started_ns - max(s["mtime_ns"], s["ctime_ns"]) > RACY_NS for s in before)
    if settled and [stat_signature(p) for p in files] == before:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(memo, {"key": key, "value": value})
        except OSError:
            pass  # a read-only cache: nothing remembered, nothing lost
    return value
