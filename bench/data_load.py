"""Run start: what loading an already tokenised corpus costs every run of a sweep.

A run's start checks which data it trains on: it hashes the bytes of every corpus file
(and a `tokens:` source scans every id against the vocabulary) before it finds the token
cache's entry. scaling.file_memo remembers those results by the files' stat signatures.
Measured here, in one process with interleaved rounds, `scaling.data.load_tokens` with the
token cache warm:
- 'computed': the memo emptied before each call (what every run start paid before it),
- 'remembered': the memo in place (every run start after the first),
on a generated `tokens:` corpus (4 raw uint16 .bin files, GPT-2 vocabulary) and a
generated `parquet:` corpus (8 files of text), both in the page cache (on a cold cache
or a network filesystem 'computed' reads from disk and costs more); and the stdlib
corpus's file listing, a walk that skips site-packages against the full `rglob` it
replaced.

Prints a table and appends a dated section to BENCHMARKS.md.
Usage: python bench/data_load.py [--tokens-mb 1024] [--parquet-mb 256] [--rounds 5] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling import corpus as corpus_lib  # noqa: E402
from scaling import file_memo  # noqa: E402
from scaling.config import DataConfig  # noqa: E402
from scaling.data import load_tokens  # noqa: E402

VOCAB = 50_257


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def write_tokens(root: Path, n_mb: int) -> DataConfig:
    root.mkdir(parents=True)
    per_file = n_mb * (1 << 20) // 2 // 4
    rng = np.random.default_rng(0)
    for i in range(4):
        rng.integers(0, VOCAB, per_file, dtype=np.uint16).tofile(root / f"shard-{i}.bin")
    return DataConfig(source=f"tokens:{root}", vocab_size=VOCAB, eval_tokens=4096)


def write_parquet(root: Path, n_mb: int) -> DataConfig:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    words = np.array("the of and to in is was for on that with as by at from it his an "
                     "were are which this be or has had not but".split())
    rng = np.random.default_rng(0)
    per_file = n_mb * (1 << 20) // 8
    for i in range(8):
        docs, size = [], 0
        while size < per_file:
            doc = " ".join(words[rng.integers(0, len(words), 2000)])
            docs.append(doc)
            size += len(doc)
        pq.write_table(pa.table({"text": docs}), root / f"part-{i}.parquet",
                       compression="none")
    return DataConfig(source=f"parquet:{root}", tokenizer="bytes", eval_tokens=4096)


def data_bytes(cfg: DataConfig) -> int:
    root = Path(cfg.source.partition(":")[2])
    return sum(p.stat().st_size for p in root.iterdir())


def timed_load(cfg: DataConfig, cache: Path, remembered: bool) -> float:
    if not remembered:
        shutil.rmtree(cache / file_memo.MEMO_DIR, ignore_errors=True)
    t0 = time.perf_counter()
    load_tokens(cfg, seq_len=128, cache_dir=cache)
    return time.perf_counter() - t0


def timed_listing(root: Path, walk: bool) -> float:
    t0 = time.perf_counter()
    if walk:
        corpus_lib.stdlib_files(root)
    else:
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
               if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)
               and p.is_file())
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens-mb", type=int, default=1024)
    ap.add_argument("--parquet-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rows = []  # (what, size, best computed, best remembered, spread computed, spread remembered)
    with tempfile.TemporaryDirectory(prefix="bench-data-load-") as tmp_name:
        tmp = Path(tmp_name)
        for name, make, n_mb in (("tokens:", write_tokens, args.tokens_mb),
                                 ("parquet:", write_parquet, args.parquet_mb)):
            cfg = make(tmp / name.rstrip(":"), n_mb)
            cache = tmp / f"cache-{name.rstrip(':')}"
            t0 = time.perf_counter()
            load_tokens(cfg, seq_len=128, cache_dir=cache)  # tokenise once; ctime settles
            print(f"{name} {data_bytes(cfg) / 1e6:.0f} MB tokenised in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
            time.sleep(max(0.0, file_memo.RACY_NS / 1e9 + 0.5 - (time.perf_counter() - t0)))
            timed_load(cfg, cache, remembered=False)  # writes the memo
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for remembered in (False, True):
                    times[remembered].append(timed_load(cfg, cache, remembered))
            rows.append((f"load_tokens, {name} source", f"{data_bytes(cfg) / 1e6:,.0f} MB",
                         times[False], times[True]))
            print(rows[-1][0], [f"{min(t):.3f}" for t in times.values()], file=sys.stderr)
        root = corpus_lib.stdlib_root()
        listing: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for walk in (False, True):
                listing[walk].append(timed_listing(root, walk))
        rows.append(("stdlib file listing (rglob -> pruned walk)",
                     f"{len(corpus_lib.stdlib_files(root)):,} files", listing[False], listing[True]))
    table = format_table(rows)
    print(table)
    if not args.no_append:
        append_section(table, args, load_before, time.perf_counter() - t_start)
    return 0


def spread(xs: list[float]) -> str:
    return f"{100 * (max(xs) - min(xs)) / min(xs):.0f}%"


def format_table(rows) -> str:
    lines = ["| what | data | before (computed), best s | after (remembered), best s | "
             "ratio | round spread before / after |", "|---|---:|---:|---:|---:|---:|"]
    for what, size, before, after in rows:
        lines.append(f"| {what} | {size} | {min(before):.3f} | {min(after):.4f} | "
                     f"{min(before) / min(after):,.0f}x | {spread(before)} / {spread(after)} |")
    return "\n".join(lines)


def append_section(table: str, args, load_before, seconds: float) -> None:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_after = os.getloadavg()
    versions = ", ".join(f"{n} {md.version(n)}" for n in ("numpy", "pyarrow"))
    text = (
        f"\n## Run start: loading a tokenised corpus (bench/data_load.py), {when}\n\n"
        f"`bench/data_load.py --tokens-mb {args.tokens_mb} --parquet-mb {args.parquet_mb} "
        f"--rounds {args.rounds}`: `scaling.data.load_tokens` with the token cache warm and "
        "the files in the page cache; 'before' empties scaling.file_memo's memo before each "
        "call (every run start hashed the corpus files, and a tokens: source scanned its ids), "
        "'after' keeps it; best of the interleaved rounds. The stdlib row times the listing "
        "alone. Machine: "
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}. "
        f"Python {platform.python_version()}, {versions}. Load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after ({seconds / 60:.1f} min).\n\n"
        + table + "\n")
    with open(REPO / "BENCHMARKS.md", "a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
