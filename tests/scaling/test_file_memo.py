"""scaling.file_memo: a data file's hash or id check is computed once while the file is
unchanged, and again after any change, even one that keeps its size and mtime."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from test_sources import documents, write_parquet  # noqa: E402

from scaling import file_memo, sources
from scaling.config import DataConfig
from scaling.data import TOKEN_BLOCK, load_tokens
from scaling.errors import UserError


@pytest.fixture
def settled(monkeypatch):
    """Files written by the test count as settled at once (their ctime is always now)."""
    monkeypatch.setattr(file_memo, "RACY_NS", 0)


@pytest.fixture
def reads(monkeypatch):
    """How many data files scaling.sources opened to hash them."""
    opened: list[str] = []

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", counting_open, raising=False)
    return opened


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def test_parquet_hash_is_read_once_and_equals_the_unremembered_hash(tmp_path, settled, reads):
    root = write_parquet(tmp_path / "pq", documents(60))
    cache = tmp_path / "cache"
    fresh = sources.open_source(f"parquet:{root}").corpus_hash  # no cache: always read
    assert len(reads) == 2
    first = sources.open_source(f"parquet:{root}", cache=cache).corpus_hash
    second = sources.open_source(f"parquet:{root}", cache=cache).corpus_hash
    assert fresh == first == second
    assert len(reads) == 4  # the first cached open read both files, the second none
    assert len(list((cache / file_memo.MEMO_DIR).glob("*.json"))) == 1


def test_a_change_that_keeps_size_and_mtime_is_read_again(tmp_path, settled, reads):
    root = write_parquet(tmp_path / "pq", documents(60), n_files=1)
    cache = tmp_path / "cache"
    before = sources.open_source(f"parquet:{root}", cache=cache).corpus_hash
    path = root / "part-000.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside the data pages
    rewrite_keeping_size_and_mtime(path, bytes(data))
    after = sources.open_source(f"parquet:{root}", cache=cache).corpus_hash
    assert after != before
    assert after == sources.open_source(f"parquet:{root}").corpus_hash
    assert len(reads) == 3


def test_a_file_changed_within_the_timestamp_granularity_is_not_remembered(tmp_path, reads):
    root = write_parquet(tmp_path / "pq", documents(20), n_files=1)  # ctime: now
    cache = tmp_path / "cache"
    sources.open_source(f"parquet:{root}", cache=cache)
    sources.open_source(f"parquet:{root}", cache=cache)
    assert len(reads) == 2
    assert not (cache / file_memo.MEMO_DIR).exists()


def test_damaged_memo_or_unwritable_cache_computes_and_loses_nothing(tmp_path, settled):
    root = write_parquet(tmp_path / "pq", documents(20), n_files=1)
    cache = tmp_path / "cache"
    want = sources.open_source(f"parquet:{root}", cache=cache).corpus_hash
    (memo,) = (cache / file_memo.MEMO_DIR).glob("*.json")
    memo.write_text('{"key": ')
    assert sources.open_source(f"parquet:{root}", cache=cache).corpus_hash == want
    assert '"value"' in memo.read_text()  # rewritten whole
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert sources.open_source(f"parquet:{root}", cache=not_a_dir).corpus_hash == want
    assert not_a_dir.read_text() == "x"


def test_token_ids_are_checked_again_after_a_same_size_change(tmp_path, settled):
    ids = (np.arange(3 * TOKEN_BLOCK) % 50).astype(np.uint16)  # 3 split units
    path = tmp_path / "tok" / "a.bin"
    path.parent.mkdir()
    ids.tofile(path)
    cfg = DataConfig(source=f"tokens:{path.parent}", vocab_size=50, eval_tokens=64)
    cache = tmp_path / "cache"
    first = load_tokens(cfg, seq_len=8, cache_dir=cache)
    assert load_tokens(cfg, seq_len=8, cache_dir=cache).corpus_hash == first.corpus_hash
    assert len(list((cache / file_memo.MEMO_DIR).glob("*.json"))) == 2  # hash, id check
    bad = ids.copy()
    bad[500] = 77
    rewrite_keeping_size_and_mtime(path, bad.tobytes())
    with pytest.raises(UserError, match="data.vocab_size: .* holds token id 77"):
        load_tokens(cfg, seq_len=8, cache_dir=cache)


def test_load_tokens_of_a_parquet_corpus_reads_it_once(tmp_path, settled, reads):
    root = write_parquet(tmp_path / "pq", documents(80))
    cfg = DataConfig(source=f"parquet:{root}", tokenizer="bytes", eval_tokens=256)
    first = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "cache")
    n_reads = len(reads)
    second = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "cache")
    assert len(reads) == n_reads
    assert second.corpus_hash == first.corpus_hash
    assert np.array_equal(second.train, first.train) and np.array_equal(second.valid, first.valid)
