"""Tokenise a document stream into a cache entry, in worker processes, resumable.

Documents go out in chunks of CHUNK_DOCS (in source order) to a pool of worker processes,
each holding the tokenizer; results come back in order and are appended to
`train.bin.partial` / `valid.bin.partial`. After every chunk the files are flushed and
fsynced and then `manifest.json` (documents done, token counts, bytes) is replaced
atomically: the manifest is the commit. A killed build leaves files at most one chunk
ahead of their manifest; the next build truncates them to the manifest's lengths and
starts at its document index, so the finished entry is byte for byte an uninterrupted
build's (chunks are a pure function of the source and the tokenizer). The finished files
are renamed to `train.bin` / `valid.bin`, and the caller writes `meta.json` last.
A change to what this module writes for the same corpus must bump scaling.data.CACHE_FORMAT.

Workers: $SCALING_TOKENIZE_WORKERS, else one per CPU (at most 8) for sources over
PARALLEL_BYTES and none (this process) for smaller ones, whose pool start-up would cost
more than it saves. A rich progress bar runs on a terminal.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from pathlib import Path

from scaling import tokenizer as tokenizer_lib
from scaling.fileio import atomic_write_json
from scaling.sources import DocumentSource

CHUNK_DOCS = 512
PARALLEL_BYTES = 64 << 20
MANIFEST = "manifest.json"
WORKERS_ENV = "SCALING_TOKENIZE_WORKERS"
CHUNK_ENV = "SCALING_TOKENIZE_CHUNK_DOCS"
# Fault injection for the resume test: SIGKILL this process after N chunks are committed,
# with the next chunk's tokens already written but not yet committed.
KILL_ENV = "SCALING_FAULT_TOKENIZE_KILL_AFTER"

_worker: dict = {}


def _init_worker(spec: tokenizer_lib.TokenizerSpec, bpe_json: str | None) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _worker["spec"] = spec
    _worker["tok"] = tokenizer_lib.load(spec, bpe_json)


def _encode_chunk(texts: list[str], valid: list[bool]) -> tuple[bytes, bytes, int]:
    """(train ids, valid ids, UTF-8 bytes of the training documents incl. separators)."""
    spec, tok = _worker["spec"], _worker["tok"]
    train_docs = [t for t, v in zip(texts, valid, strict=True) if not v and t]
    valid_docs = [t for t, v in zip(texts, valid, strict=True) if v and t]
    train = tokenizer_lib.encode_documents(train_docs, spec, tok)
    valid_ids = tokenizer_lib.encode_documents(valid_docs, spec, tok)
    n_bytes = sum(len(d.encode("utf-8")) + 1 for d in train_docs)
    return train.tobytes(), valid_ids.tobytes(), n_bytes


def n_workers(source: DocumentSource) -> int:
    env = os.environ.get(WORKERS_ENV)
    if env:
        return max(0, int(env))
    return min(os.cpu_count() or 1, 8) if source.n_bytes > PARALLEL_BYTES else 0


def _chunks(source: DocumentSource, start: int, size: int):
    texts: list[str] = []
    index = start
    for text in source.read(start):
        texts.append(text)
        if len(texts) == size:
            yield index, texts, source.is_valid[index:index + size].tolist()
            index += size
            texts = []
    if texts:
        yield index, texts, source.is_valid[index:index + len(texts)].tolist()


def _results(source, start, size, spec, bpe_json, workers):
    """(first doc, n docs, encoded) per chunk, in order; at most 2 chunks per worker in
    flight so a large corpus is never read into memory ahead of the writer."""
    if workers == 0:
        _init_worker(spec, bpe_json)
        for index, texts, valid in _chunks(source, start, size):
            yield index, len(texts), _encode_chunk(texts, valid)
        return
    import multiprocessing

    # spawn: the caller may hold JAX's threads, which fork would copy half-initialised
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec, bpe_json)) as pool:
        pending: collections.deque = collections.deque()
        for index, texts, valid in _chunks(source, start, size):
            pending.append((index, len(texts), pool.apply_async(_encode_chunk, (texts, valid))))
            if len(pending) >= 2 * workers:
                i, n, res = pending.popleft()
                yield i, n, res.get()
        while pending:
            i, n, res = pending.popleft()
            yield i, n, res.get()


def _progress(total: int, description: str):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(TextColumn("[bold]tokenising[/] {task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("docs"), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def build(entry: Path, source: DocumentSource, spec: tokenizer_lib.TokenizerSpec,
          bpe_json: str | None = None, key: dict | None = None) -> dict:
    """Tokenise `source` into `entry/{train,valid}.bin`, resuming a killed build (only one
    of the same `key`, the caller's cache key). Returns {"n_train", "n_valid",
    "train_bytes"}. The caller holds the entry's lock."""
    entry.mkdir(parents=True, exist_ok=True)
    paths = {s: entry / f"{s}.bin.partial" for s in ("train", "valid")}
    manifest_path = entry / MANIFEST
    itemsize = spec.dtype.itemsize
    state = {"docs_done": 0, "n_train": 0, "n_valid": 0, "train_bytes": 0}
    header = {"corpus_hash": source.corpus_hash, "tokenizer": spec.tag, "key": key}
    if manifest_path.exists():
        try:
            saved = json.loads(manifest_path.read_text())
        except ValueError:
            saved = {}
        if all(saved.get(k) == v for k, v in header.items()):
            state.update({k: int(saved[k]) for k in ("docs_done", "n_train", "n_valid",
                                                     "train_bytes")})
    files = {}
    for split, path in paths.items():
        files[split] = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115
        files[split].truncate(state[f"n_{split}"] * itemsize)  # drop an uncommitted chunk
        files[split].seek(0, os.SEEK_END)
    size = int(os.environ.get(CHUNK_ENV) or CHUNK_DOCS)
    kill_after = os.environ.get(KILL_ENV)
    committed = 0
    try:
        with _progress(source.n_docs, source.description[:60]) as bar:
            task = bar.add_task(source.description[:60], total=source.n_docs,
                                completed=state["docs_done"])
            for index, n, (train, valid, n_bytes) in _results(
                    source, state["docs_done"], size, spec, bpe_json, n_workers(source)):
                assert index == state["docs_done"]
                files["train"].write(train)
                files["valid"].write(valid)
                if kill_after is not None and committed == int(kill_after):
                    for f in files.values():
                        f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                for f in files.values():
                    f.flush()
                    os.fsync(f.fileno())
                state["docs_done"] += n
                state["n_train"] += len(train) // itemsize
                state["n_valid"] += len(valid) // itemsize
                state["train_bytes"] += n_bytes
                atomic_write_json(manifest_path, {**state, **header})
                committed += 1
                bar.update(task, completed=state["docs_done"])
    finally:
        for f in files.values():
            f.close()
    for split, path in paths.items():
        os.replace(path, entry / f"{split}.bin")
    manifest_path.unlink(missing_ok=True)
    if sys.platform != "win32":
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames are durable before meta.json says the entry is whole
        finally:
            os.close(fd)
    return {k: state[k] for k in ("n_train", "n_valid", "train_bytes")}
