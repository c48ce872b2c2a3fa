"""scaling.data / corpus / tokenizer: sources, tokenizers, cache, pure batches, eval set."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from scaling import corpus as corpus_lib
from scaling import data as data_lib
from scaling import tokenizer as tokenizer_lib
from scaling.config import DataConfig
from scaling.data import epochs, eval_batches, load_tokens, train_batch, unigram_entropy
from scaling.errors import UserError

SNIPPETS = [
    "def f(x):\n    return x * 2  # doubling\n",
    "naïve café — 数据 🚀 unicode survives\n",
    "class A:\n    pass\n\nprint('hello, world')\n",
    "for i in range(10):\n    total += i ** 2\n",
]


def write_corpus(root, n_files=40, lines_per_file=30):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        lines = [f"# file {i} line {j}: " + SNIPPETS[(i + j) % len(SNIPPETS)]
                 for j in range(lines_per_file)]
        (root / f"sub{i % 3}" / f"doc{i:03d}.txt").parent.mkdir(exist_ok=True)
        (root / f"sub{i % 3}" / f"doc{i:03d}.txt").write_text("".join(lines), encoding="utf-8")
    return root


def decode_docs(stream: np.ndarray) -> list[str]:
    return [d for d in np.asarray(stream, np.uint8).tobytes().decode("utf-8").split("\0") if d]


# ---------------------------------------------------------------------------------------
# Batches and evaluation set

def test_train_batch_is_a_pure_function_of_seed_and_step():
    stream = np.arange(10_000, dtype=np.uint16)
    a = train_batch(stream, seed=3, step=17, batch_size=8, seq_len=32)
    b = train_batch(stream, seed=3, step=17, batch_size=8, seq_len=32)
    assert a.dtype == np.int32 and a.shape == (8, 33)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, train_batch(stream, seed=3, step=18, batch_size=8, seq_len=32))
    assert not np.array_equal(a, train_batch(stream, seed=4, step=17, batch_size=8, seq_len=32))
    # windows are contiguous slices of the stream (stream[i] == i)
    np.testing.assert_array_equal(np.diff(a, axis=1), 1)
    # same answer in a fresh process: nothing but (seed, step) is carried
    code = ("import numpy as np; from scaling.data import train_batch; "
            "b = train_batch(np.arange(10_000, dtype=np.uint16), seed=3, step=17, batch_size=8,"
            " seq_len=32); print(b[:, 0].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == a[:, 0].tolist()


def test_train_batch_covers_the_stream_uniformly():
    stream = np.arange(1_000, dtype=np.uint16)
    starts = np.concatenate([train_batch(stream, seed=0, step=s, batch_size=64, seq_len=9)[:, 0]
                             for s in range(200)])
    assert starts.min() == 0 and starts.max() == 1_000 - 10  # every valid start reachable
    counts = np.bincount(starts // 100, minlength=10)[:10]
    assert counts.min() > 0.8 * counts.mean()


def test_eval_batches_fixed_contiguous_and_batch_size_independent():
    valid = np.arange(5_000, dtype=np.uint16)
    batches = eval_batches(valid, eval_tokens=1_000, batch_size=4, seq_len=64)
    windows = np.concatenate(batches)
    assert len(windows) == math.ceil(1_000 / 64)
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    np.testing.assert_array_equal(windows[0], valid[:65])
    # consecutive windows share exactly one token: every target is scored once, in order
    np.testing.assert_array_equal(windows[:, 1:].ravel(), valid[1:len(windows) * 64 + 1])
    other = np.concatenate(eval_batches(valid, eval_tokens=1_000, batch_size=3, seq_len=64))
    np.testing.assert_array_equal(windows, other)
    again = np.concatenate(eval_batches(valid, eval_tokens=1_000, batch_size=4, seq_len=64))
    np.testing.assert_array_equal(windows, again)


def test_eval_batches_short_stream_warns_and_too_short_raises():
    valid = np.arange(200, dtype=np.uint16)
    with pytest.warns(UserWarning, match="eval_tokens"):
        batches = eval_batches(valid, eval_tokens=10_000, batch_size=8, seq_len=64)
    assert sum(len(b) for b in batches) == (200 - 1) // 64
    with pytest.raises(UserError, match="seq_len"):
        eval_batches(valid, eval_tokens=100, batch_size=8, seq_len=500)


def test_epochs_and_unigram_entropy():
    data = data_lib.TokenData(train=np.zeros(1_000, np.uint16), valid=np.zeros(10, np.uint16),
                              vocab_size=256, corpus_hash="x", bytes_per_token=1.0, source="s",
                              tokenizer="bytes")
    assert epochs(2_500, data) == 2.5
    assert data_lib.check_max_epochs(2_500, data, None) == 2.5
    assert data_lib.check_max_epochs(2_500, data, 3.0) == 2.5
    with pytest.raises(UserError, match="data.max_epochs"):
        data_lib.check_max_epochs(2_500, data, 2.0)
    assert data.info()["n_train_tokens"] == 1_000
    assert unigram_entropy(np.array([0, 1, 2, 3] * 10)) == pytest.approx(math.log(4))
    assert unigram_entropy(np.array([5, 5, 5, 7])) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


# ---------------------------------------------------------------------------------------
# Sources, tokenizers, cache

def test_text_directory_bytes_split_and_round_trip(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    data = load_tokens(DataConfig(source=f"text:{root}"), seq_len=16, cache_dir=tmp_path / "c")
    assert data.vocab_size == 256 and data.bytes_per_token == 1.0
    assert data.train.dtype == np.uint16 and isinstance(data.train, np.memmap)
    train_docs, valid_docs = decode_docs(data.train), decode_docs(data.valid)
    originals = {p.read_text(encoding="utf-8") for p in root.rglob("*.txt")}
    assert len(train_docs) + len(valid_docs) == len(originals) == 40
    assert set(train_docs) | set(valid_docs) <= originals
    assert valid_docs and not set(train_docs) & set(valid_docs)
    # the split and hash depend on relative paths and content, not on where the corpus lives
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "copy")
    again = load_tokens(DataConfig(source=f"text:{moved}"), seq_len=16, cache_dir=tmp_path / "c2")
    assert again.corpus_hash == data.corpus_hash
    np.testing.assert_array_equal(again.valid, data.valid)
    (moved / "sub0" / "doc000.txt").write_text("changed\n" * 50)
    changed = load_tokens(DataConfig(source=f"text:{moved}"), seq_len=16, cache_dir=tmp_path / "c2")
    assert changed.corpus_hash != data.corpus_hash


def test_single_file_and_jsonl_sources(tmp_path):
    single = tmp_path / "one.txt"
    single.write_text("".join(f"line {i} {SNIPPETS[i % 4]}" for i in range(1_000)))
    data = load_tokens(DataConfig(source=f"text:{single}"), seq_len=32, cache_dir=tmp_path)
    assert len(data.valid) > 0 and len(data.train) > 0
    records = tmp_path / "docs.jsonl"
    records.write_text("\n".join(json.dumps({"text": s * 20, "id": i})
                                 for i, s in enumerate(SNIPPETS * 10)) + "\n")
    data = load_tokens(DataConfig(source=f"text:{records}"), seq_len=32, cache_dir=tmp_path)
    docs = decode_docs(data.train) + decode_docs(data.valid)
    assert len(docs) == 40 and set(docs) == {s * 20 for s in SNIPPETS}
    # a lone surrogate (legal in JSON, not in UTF-8) is replaced, for bytes and for BPE
    records.write_text("\n".join(json.dumps({"text": f"doc {i} \ud800 end " * 30})
                                 for i in range(20)))
    for tokenizer in ("bytes", "bpe:260"):
        data = load_tokens(DataConfig(source=f"text:{records}", tokenizer=tokenizer),
                           seq_len=8, cache_dir=tmp_path)
        assert len(data.train) > 0


def test_bpe_round_trip_and_stream(tmp_path):
    root = write_corpus(tmp_path / "corpus", n_files=30)
    cfg = DataConfig(source=f"text:{root}", tokenizer="bpe:300")
    data = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "cache")
    assert data.vocab_size == 300 and int(data.train.max()) < 300
    assert data.bytes_per_token > 1.5  # merges learnt: fewer tokens than bytes
    path = data_lib.bpe_tokenizer_path(data.corpus_hash, "bpe:300", cache_dir=tmp_path / "cache")
    bpe = tokenizer_lib.load_bpe(path.read_text(encoding="utf-8"))
    spec = tokenizer_lib.parse_tokenizer("bpe:300")
    for text in SNIPPETS + ["  leading spaces\ttabs\r\nand\x00nul", ""]:
        ids = bpe.encode(text, add_special_tokens=False).ids
        assert tokenizer_lib.decode(np.array(ids), spec, bpe) == text
    # the stored stream decodes back to documents separated by the end-of-text token (id 0)
    stream = np.asarray(data.valid)
    pieces = np.split(stream, np.flatnonzero(stream == 0) + 1)
    docs = [tokenizer_lib.decode(p[:-1], spec, bpe) for p in pieces if len(p) > 1]
    originals = {p.read_text(encoding="utf-8") for p in root.rglob("*.txt")}
    assert docs and set(docs) <= originals


def test_cache_hit_is_fast_identical_and_skips_tokenizing(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "corpus", n_files=60, lines_per_file=200)
    cfg = DataConfig(source=f"text:{root}", tokenizer="bpe:400")
    t0 = time.perf_counter()
    cold = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "cache")
    cold_s = time.perf_counter() - t0

    def boom(*args, **kwargs):
        raise AssertionError("cache miss: tokenized again")

    monkeypatch.setattr(tokenizer_lib, "encode_documents", boom)
    monkeypatch.setattr(tokenizer_lib, "train_bpe", boom)
    t0 = time.perf_counter()
    warm = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "cache")
    warm_s = time.perf_counter() - t0
    np.testing.assert_array_equal(cold.train, warm.train)
    np.testing.assert_array_equal(cold.valid, warm.valid)
    assert warm.corpus_hash == cold.corpus_hash and warm.bytes_per_token == cold.bytes_per_token
    assert warm_s < cold_s
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # atomic writes leave no temp files


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    cfg = DataConfig(source="synthetic:tokens=5000,vocab=16")
    first_train = np.array(load_tokens(cfg, seq_len=8, cache_dir=tmp_path).train)  # copy:
    # truncating a file in place under a live memmap would fault (the cache itself only
    # ever replaces files by rename, which leaves existing maps intact)
    (train_bin,) = list(tmp_path.rglob("train.bin"))
    train_bin.write_bytes(train_bin.read_bytes()[:100])  # truncated, as after a crash
    again = load_tokens(cfg, seq_len=8, cache_dir=tmp_path)
    np.testing.assert_array_equal(first_train, again.train)


def entry_files(cache) -> dict:
    """{relative path: bytes} of every file a cache holds (lock files aside)."""
    return {p.relative_to(cache).as_posix(): p.read_bytes() for p in sorted(cache.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def count_encodes(monkeypatch) -> list:
    calls: list = []
    encode = tokenizer_lib.encode_documents

    def counted(*args, **kwargs):
        calls.append(1)
        return encode(*args, **kwargs)

    monkeypatch.setattr(tokenizer_lib, "encode_documents", counted)
    return calls


def test_rebuilt_cache_equals_the_cached_one_byte_for_byte(tmp_path):
    root = write_corpus(tmp_path / "corpus", n_files=30)
    cfg = DataConfig(source=f"text:{root}", tokenizer="bpe:300")
    load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "a")
    cached = entry_files(tmp_path / "a")
    assert any(k.startswith("tokens/") and k.endswith("/train.bin") for k in cached)
    assert any(k.startswith("tokenizers/") for k in cached)
    load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "b")  # a fresh build elsewhere
    assert entry_files(tmp_path / "b") == cached
    # and a rebuild in place, forced by a recorded key that no longer matches
    (meta_path,) = (tmp_path / "a" / "tokens").glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "key": {**meta["key"], "format": 0}}))
    load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "a")
    assert entry_files(tmp_path / "a") == cached


def test_version_or_split_change_gives_a_new_key_and_a_rebuild(tmp_path, monkeypatch):
    root = write_corpus(tmp_path / "corpus")
    cfg = DataConfig(source=f"text:{root}")
    cache = tmp_path / "cache"
    calls = count_encodes(monkeypatch)
    first = np.array(load_tokens(cfg, seq_len=16, cache_dir=cache).train)
    built = len(calls)
    assert built > 0
    load_tokens(cfg, seq_len=16, cache_dir=cache)
    assert len(calls) == built  # same code, same settings: a hit

    monkeypatch.setattr(data_lib, "CACHE_FORMAT", data_lib.CACHE_FORMAT + 1)
    bumped = load_tokens(cfg, seq_len=16, cache_dir=cache)
    assert len(calls) > built  # rebuilt, not reused
    np.testing.assert_array_equal(bumped.train, first)  # (the code itself did not change)
    metas = [json.loads(p.read_text()) for p in (cache / "tokens").glob("*/meta.json")]
    assert sorted(m["key"]["format"] for m in metas) == [data_lib.CACHE_FORMAT - 1,
                                                         data_lib.CACHE_FORMAT]
    monkeypatch.undo()

    calls = count_encodes(monkeypatch)
    n_valid = load_tokens(cfg, seq_len=16, cache_dir=cache).valid.shape[0]
    assert calls == []
    monkeypatch.setattr(corpus_lib, "VALID_MODULUS", 3)  # about a third held out
    resplit = load_tokens(cfg, seq_len=16, cache_dir=cache)
    assert calls and resplit.valid.shape[0] > 2 * n_valid
    assert len(list((cache / "tokens").glob("*/meta.json"))) == 3


def test_entry_of_older_code_is_not_reused(tmp_path):
    """Entries written by older tokenising code (format 1: keyed by corpus hash and
    tokenizer alone, no key in meta.json) are ignored, where they lie and even when found
    at the new entry's path; so is a half-built entry of older code (no key in its manifest)."""
    root = write_corpus(tmp_path / "corpus")
    cfg = DataConfig(source=f"text:{root}")
    fresh = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "ref")
    ref_train, ref_valid = np.array(fresh.train), np.array(fresh.valid)
    (ref_entry,) = (tmp_path / "ref" / "tokens").glob("*-bytes")

    def plant(entry):  # 27 stray separators, as when older code kept empty documents
        entry.mkdir(parents=True, exist_ok=True)
        stale = np.concatenate([ref_train, np.zeros(27, ref_train.dtype)])
        (entry / "train.bin.new").write_bytes(stale.tobytes())
        os.replace(entry / "train.bin.new", entry / "train.bin")  # live memmaps stay intact
        (entry / "valid.bin").write_bytes(ref_valid.tobytes())
        (entry / "meta.json").write_text(json.dumps({
            "corpus_hash": fresh.corpus_hash, "tokenizer": "bytes", "source": fresh.source,
            "n_train": len(stale), "n_valid": len(ref_valid), "train_bytes": len(stale),
            "format": 1}))

    cache = tmp_path / "cache"
    plant(cache / "tokens" / f"{fresh.corpus_hash[:20]}-bytes")  # the old layout's path
    plant(cache / "tokens" / ref_entry.name)  # and the new one's
    data = load_tokens(cfg, seq_len=16, cache_dir=cache)
    np.testing.assert_array_equal(data.train, ref_train)
    assert data.bytes_per_token == fresh.bytes_per_token
    assert (cache / "tokens" / ref_entry.name / "meta.json").read_bytes() == (
        ref_entry / "meta.json").read_bytes()

    half = tmp_path / "half" / "tokens" / ref_entry.name
    half.mkdir(parents=True)
    (half / "train.bin.partial").write_bytes(b"\xff" * 64)
    (half / "valid.bin.partial").write_bytes(b"")
    (half / "manifest.json").write_text(json.dumps({
        "docs_done": 40, "n_train": 32, "n_valid": 0, "train_bytes": 32,
        "corpus_hash": fresh.corpus_hash, "tokenizer": "bytes"}))
    resumed = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "half")
    np.testing.assert_array_equal(resumed.train, ref_train)
    np.testing.assert_array_equal(resumed.valid, ref_valid)


def test_synthetic_entropy_floor_matches_empirical_estimates(tmp_path):
    cfg = DataConfig(source="synthetic:tokens=200000,vocab=32,seed=5,alpha=0.3")
    data = load_tokens(cfg, seq_len=64, cache_dir=tmp_path)
    p, pi = corpus_lib.markov_chain(32, 5, 0.3)
    x = np.asarray(data.train, np.int64)
    nll = -np.log(p[x[:-1], x[1:]])
    # the true model's mean log-loss is an unbiased estimate of the entropy rate
    assert abs(nll.mean() - data.entropy_floor) < 5 * nll.std() / math.sqrt(len(nll))
    # plug-in conditional entropy from bigram counts (independent of p): bias ~ cells/(2n)
    counts = np.zeros((32, 32))
    np.add.at(counts, (x[:-1], x[1:]), 1)
    cond = counts / counts.sum(1, keepdims=True)
    plug_in = -np.sum(counts / counts.sum() * np.log(np.where(cond > 0, cond, 1)))
    assert abs(plug_in - data.entropy_floor) < 0.02
    # the stationary distribution is what the stream visits
    np.testing.assert_allclose(np.bincount(x, minlength=32) / len(x), pi, atol=0.01)
    assert unigram_entropy(x) > data.entropy_floor + 0.3  # context really helps
    # and the Dirichlet expectation of a row's entropy is near the exact rate
    from scipy.special import digamma
    assert abs(data.entropy_floor - (digamma(32 * 0.3 + 1) - digamma(0.3 + 1))) < 0.25
    np.testing.assert_array_equal(
        load_tokens(cfg, seq_len=64, cache_dir=tmp_path / "other").valid, data.valid)


def test_synthetic_valid_prefix_is_independent_of_eval_tokens(tmp_path):
    small = load_tokens(DataConfig(source="synthetic:tokens=1000,vocab=8"), seq_len=8,
                        cache_dir=tmp_path)
    big = load_tokens(DataConfig(source="synthetic:tokens=1000,vocab=8", eval_tokens=400_000),
                      seq_len=8, cache_dir=tmp_path)
    assert len(big.valid) > len(small.valid)
    np.testing.assert_array_equal(big.valid[:len(small.valid)], small.valid)
    np.testing.assert_array_equal(big.train, small.train)


@pytest.mark.parametrize(("source", "tokenizer", "seq_len", "field"), [
    ("wikipedia", "bytes", 16, "data.source"),
    ("text:", "bytes", 16, "data.source"),
    ("text:/no/such/path", "bytes", 16, "data.source"),
    ("text:{empty_dir}", "bytes", 16, "data.source"),
    ("text:{empty_file}", "bytes", 16, "data.source"),
    ("text:{bad_jsonl}", "bytes", 16, "data.source"),
    ("synthetic:vocab=x", "bytes", 16, "data.source"),
    ("synthetic:colour=3", "bytes", 16, "data.source"),
    ("stdlib", "sentencepiece", 16, "data.tokenizer"),
    ("stdlib", "bpe:abc", 16, "data.tokenizer"),
    ("stdlib", "bpe:100", 16, "data.tokenizer"),
    ("synthetic", "bpe:1000", 16, "data.tokenizer"),
    ("synthetic:tokens=100", "bytes", 1_000, "seq_len"),
    ("text:{small_file}", "bytes", 100_000, "seq_len"),
])
def test_bad_inputs_raise_one_line_user_error(tmp_path, source, tokenizer, seq_len, field):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_file.txt").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    (tmp_path / "small.txt").write_text("x = 1\n" * 300)
    source = source.format(empty_dir=tmp_path / "empty_dir", empty_file=tmp_path / "empty_file.txt",
                           bad_jsonl=tmp_path / "bad.jsonl", small_file=tmp_path / "small.txt")
    with pytest.raises(UserError) as info:
        load_tokens(DataConfig(source=source, tokenizer=tokenizer), seq_len=seq_len,
                    cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert field in message and "\n" not in message


def test_stdlib_corpus_bytes(tmp_path):
    """The embedded default corpus: ~30 MB of *.py, ~1% held out, hash stable."""
    t0 = time.perf_counter()
    data = load_tokens(DataConfig(), seq_len=256, cache_dir=tmp_path)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = load_tokens(DataConfig(), seq_len=256, cache_dir=tmp_path)
    warm_s = time.perf_counter() - t0
    n_total = len(data.train) + len(data.valid)
    assert n_total > 5_000_000 and data.bytes_per_token == 1.0
    assert 0.002 < len(data.valid) / n_total < 0.05
    assert warm.corpus_hash == data.corpus_hash and len(data.corpus_hash) == 64
    assert warm_s < cold_s + 1.0
    # Python source is far from uniform over bytes: the unigram baseline is well below log 256
    assert 2.5 < unigram_entropy(np.asarray(data.valid)) < 4.5
    first_doc = decode_docs(data.train[:200_000])[0]
    root = corpus_lib.stdlib_root()
    first_path = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                        if "site-packages" not in p.parts)
    assert first_doc in {(root / rel).read_text(encoding="utf-8", errors="replace")
                         for rel in first_path[:5]}


def test_stdlib_walk_selects_what_rglob_selects_without_entering_site_packages(tmp_path):
    """The stdlib's files (scaling.corpus.stdlib_files) are exactly the `*.py` files a full
    `rglob` finds outside `site-packages`/`dist-packages`, symlinks treated as rglob does."""
    root = tmp_path / "lib"
    for rel in ("os.py", "json/__init__.py", "json/tool.py", "test/site-packages-like.py",
                "site-packages/numpy/core.py", "deep/dist-packages/x.py", "a.pyc", "notes.txt",
                "pkg.py/inner.py", "encodings/.hidden.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    (root / "linked.py").symlink_to(root / "os.py")
    (root / "linked_dir").symlink_to(root / "json", target_is_directory=True)

    def reference(root):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                      if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)
                      and p.is_file())

    assert corpus_lib.stdlib_files(root) == reference(root)
    assert "linked.py" in reference(root) and "pkg.py/inner.py" in reference(root)
    real = corpus_lib.stdlib_root()
    assert corpus_lib.stdlib_files(real) == reference(real)
