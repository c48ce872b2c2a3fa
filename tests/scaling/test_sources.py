"""scaling.sources / token_cache: Parquet, HF datasets (hub cache offline, save_to_disk),
pre-tokenized files, tokenizer.json; worker-process tokenisation that resumes after a
kill; every new source trains a tiny run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: helpers are not on the path
from train_helpers import REPO, cli_env, run_cli, tiny_config  # noqa: E402

from scaling import corpus as corpus_lib
from scaling import runs
from scaling import tokenizer as tokenizer_lib
from scaling.config import DataConfig
from scaling.data import TOKEN_BLOCK, load_tokens
from scaling.errors import UserError
from scaling.train import train_run

WORDS = ["alpha", "beta", "gamma", "delta", "naïve", "café", "数据", "def", "return", "x"]


def documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[w] for w in rng.integers(0, len(WORDS), 40 + i % 7)) + f" #{i}\n"
            for i in range(n)]


def expected_bytes(docs: list[str], keys: list[str]) -> tuple[bytes, bytes]:
    """The token streams of the bytes tokenizer, built independently: each split's
    documents in order, each followed by NUL."""
    is_valid = corpus_lib.split_mask(keys, "test")
    train = b"".join(d.encode() + b"\0" for d, v in zip(docs, is_valid, strict=True) if not v)
    valid = b"".join(d.encode() + b"\0" for d, v in zip(docs, is_valid, strict=True) if v)
    return train, valid


def as_bytes(ids: np.ndarray) -> bytes:
    return np.asarray(ids, np.uint8).tobytes()


def write_parquet(root: Path, docs: list[str], column: str = "text", n_files: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    per = math.ceil(len(docs) / n_files)
    for i in range(n_files):
        part = docs[i * per:(i + 1) * per]
        table = pa.table({column: part, "id": list(range(len(part)))})
        pq.write_table(table, root / f"part-{i:03d}.parquet", row_group_size=7)
    return root


def write_tokenizer_json(path: Path, docs: list[str], vocab_size: int = 300) -> Path:
    tok = tokenizer_lib.train_bpe(docs, vocab_size)  # EOT is a special token of it
    path.write_text(tok.to_str(), encoding="utf-8")
    return path


def train_tiny(tmp_path: Path, data: DataConfig, vocab_size: int) -> dict:
    cfg = tiny_config(data=data, n_steps=6, log_every=2)
    cfg = cfg.with_(model=replace(cfg.model, vocab_size=vocab_size),
                    data=replace(data, eval_tokens=32))
    run_dir = runs.init_run_dir(tmp_path / "runs", cfg)
    result = train_run(run_dir, progress=False, cache_dir=tmp_path / "cache")
    assert runs.read_status(run_dir)["state"] == "done"
    config = json.loads((run_dir / "config.json").read_text())
    assert result["corpus_hash"] == config.get("corpus_hash", result["corpus_hash"])
    # a real fit of real tokens: below the uniform baseline after a few steps
    assert math.isfinite(result["eval_loss"]) and result["eval_loss"] < math.log(vocab_size)
    return result


# ----------------------------------------------------------------------------- Parquet

def test_parquet_directory_named_column_round_trips_and_trains(tmp_path):
    docs = documents(80)
    root = write_parquet(tmp_path / "pq", docs, column="body")
    data = load_tokens(DataConfig(source=f"parquet:{root}", text_column="body"), seq_len=16,
                       cache_dir=tmp_path / "c")
    per = 40
    keys = [f"part-{i // per:03d}.parquet#{i % per}" for i in range(80)]
    train, valid = expected_bytes(docs, keys)
    assert as_bytes(data.train) == train and as_bytes(data.valid) == valid
    assert data.bytes_per_token == 1.0 and "2 files, 80 rows" in data.source
    # the hash follows the content, not the place: a copy elsewhere shares the cache entry
    import shutil

    shutil.copytree(root, tmp_path / "moved")
    moved = load_tokens(DataConfig(source=f"parquet:{tmp_path / 'moved'}", text_column="body"),
                        seq_len=16, cache_dir=tmp_path / "c")
    assert moved.corpus_hash == data.corpus_hash
    # a different column of the same files is a different corpus
    (tmp_path / "one").mkdir()
    write_parquet(tmp_path / "one", docs, column="text", n_files=1)
    other = load_tokens(DataConfig(source=f"parquet:{tmp_path / 'one' / 'part-000.parquet'}"),
                        seq_len=16, cache_dir=tmp_path / "c")
    assert other.corpus_hash != data.corpus_hash
    train_tiny(tmp_path, DataConfig(source=f"parquet:{root}", text_column="body"), 256)


def test_parquet_without_the_named_column_names_the_field(tmp_path):
    root = write_parquet(tmp_path / "pq", documents(10), column="content")
    with pytest.raises(UserError) as info:
        load_tokens(DataConfig(source=f"parquet:{root}"), seq_len=8, cache_dir=tmp_path / "c")
    message = str(info.value)
    assert message.startswith("data.text_column:") and "'text'" in message
    assert "content" in message and "\n" not in message


# ----------------------------------------------------------------------------- datasets

def test_hf_disk_dataset_with_a_pretrained_tokenizer_json_trains(tmp_path):
    import datasets

    docs = documents(60, seed=1)
    datasets.Dataset.from_dict({"text": docs, "n": list(range(60))}).save_to_disk(
        str(tmp_path / "saved"))
    tok_path = write_tokenizer_json(tmp_path / "tokenizer.json", documents(200, seed=2))
    cfg = DataConfig(source=f"hf-disk:{tmp_path / 'saved'}", tokenizer=f"json:{tok_path}")
    data = load_tokens(cfg, seq_len=16, cache_dir=tmp_path / "c")
    # independent reference: the same tokenizer file through HF tokenizers directly
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    eot = tok.token_to_id(tokenizer_lib.EOT)
    is_valid = corpus_lib.split_mask([f"#{i}" for i in range(60)], "test")
    ref = {False: [], True: []}
    for d, v in zip(docs, is_valid, strict=True):
        ref[bool(v)] += tok.encode(d, add_special_tokens=False).ids + [eot]
    assert data.train.tolist() == ref[False] and data.valid.tolist() == ref[True]
    assert data.vocab_size == tok.get_vocab_size(with_added_tokens=True)
    assert data.bytes_per_token == pytest.approx(
        sum(len(d.encode()) + 1 for d, v in zip(docs, is_valid, strict=True) if not v)
        / len(ref[False]))
    train_tiny(tmp_path, cfg, data.vocab_size)


def test_tokenizer_json_without_an_end_of_document_token_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(documents(50), trainers.BpeTrainer(vocab_size=280,
                                                               show_progress=False))
    (tmp_path / "t.json").write_text(tok.to_str())
    with pytest.raises(UserError, match="^data.tokenizer: .*end-of-document"):
        tokenizer_lib.parse_tokenizer(f"json:{tmp_path / 't.json'}")
    with pytest.raises(UserError, match="^data.tokenizer: .*tokenizer.json"):
        tokenizer_lib.parse_tokenizer(f"json:{tmp_path / 'missing.json'}")


def test_hf_dataset_through_load_dataset_offline_trains(tmp_path):
    """`hf:NAME` through `datasets.load_dataset` with HF_DATASETS_OFFLINE=1 and a
    temporary HF cache: NAME is a local dataset directory (JSON Lines files), which
    load_dataset builds into the cache like a hub dataset, with no network."""
    docs = documents(70, seed=3)
    local = tmp_path / "my_dataset"
    local.mkdir()
    (local / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (local / "test.jsonl").write_text(json.dumps({"text": "held elsewhere"}) + "\n")
    cfg = tiny_config(n_steps=6, log_every=2)
    cfg = cfg.with_(model=replace(cfg.model, vocab_size=256),
                    data=DataConfig(source=f"hf:{local}::train", eval_tokens=64))
    run_dir = runs.init_run_dir(tmp_path / "runs", cfg)
    hf_home = tmp_path / "hf"
    env = cli_env(tmp_path / "cache", HF_HOME=str(hf_home), HF_DATASETS_OFFLINE="1",
                  HF_HUB_OFFLINE="1")
    proc = run_cli("train", str(run_dir), "--quiet", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["eval_loss"] < math.log(256)
    assert list((hf_home / "datasets").rglob("*.arrow")), "load_dataset used its own cache"
    # the streams are the documents of the train split, split by row index
    code = ("import sys, json; from scaling.data import load_tokens; "
            "from scaling.config import DataConfig; "
            "d = load_tokens(DataConfig(source=sys.argv[1]), seq_len=16); "
            "print(json.dumps([bytes(d.train.astype('u1')).hex(), "
            "bytes(d.valid.astype('u1')).hex(), d.corpus_hash]))")
    out = subprocess.run([sys.executable, "-c", code, f"hf:{local}::train"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    train_hex, valid_hex, corpus_hash = json.loads(out.stdout)
    train, valid = expected_bytes(docs, [f"#{i}" for i in range(70)])
    assert bytes.fromhex(train_hex) == train and bytes.fromhex(valid_hex) == valid
    assert corpus_hash == result["corpus_hash"]


def test_hf_missing_dataset_offline_is_a_user_error(tmp_path):
    env = cli_env(tmp_path / "cache", HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1",
                  HF_HUB_OFFLINE="1")
    code = ("from scaling.data import load_tokens; from scaling.config import DataConfig; "
            "from scaling.errors import UserError\n"
            "try:\n    load_tokens(DataConfig(source='hf:no-such-org/no-such-set'), seq_len=8)\n"
            "except UserError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.stdout.startswith("data.source: hf:no-such-org/no-such-set")
    assert out.stdout.count("\n") == 1


# ----------------------------------------------------------------------------- token files

def test_token_files_bin_and_npy_split_in_blocks_and_train(tmp_path):
    root = tmp_path / "ids"
    root.mkdir()
    # ids with structure to learn (UTF-8 bytes of text, shifted into 40..295), not uniform noise
    text = np.frombuffer("".join(documents(1200)).encode(), np.uint8).astype(np.int64) + 40
    a = text[:2 * TOKEN_BLOCK + 123].astype(np.uint16)
    b = text[-(TOKEN_BLOCK // 2):]
    a.tofile(root / "a.bin")  # nanoGPT's layout: raw uint16, no header
    np.save(root / "b.npy", b)
    data = load_tokens(DataConfig(source=f"tokens:{root}", vocab_size=300), seq_len=16,
                       cache_dir=tmp_path / "c")
    blocks = [("a.bin", i, a[i * TOKEN_BLOCK:(i + 1) * TOKEN_BLOCK]) for i in range(3)]
    blocks.append(("b.npy", 0, b))
    is_valid = corpus_lib.split_mask([f"{rel}:{i}" for rel, i, _ in blocks], "test")
    ref_train = np.concatenate([x for (_, _, x), v in zip(blocks, is_valid, strict=True) if not v])
    ref_valid = np.concatenate([x for (_, _, x), v in zip(blocks, is_valid, strict=True) if v])
    np.testing.assert_array_equal(data.train, ref_train)
    np.testing.assert_array_equal(data.valid, ref_valid)
    assert data.vocab_size == 300 and data.train.dtype == np.uint16
    train_tiny(tmp_path, DataConfig(source=f"tokens:{root}", vocab_size=300), 300)


@pytest.mark.parametrize("vocab_size, message", [
    (200, "token id 2"),  # ids up to 299 exceed a declared 200
    (None, "required"),
])
def test_token_file_ids_beyond_the_vocabulary_name_the_field(tmp_path, vocab_size, message):
    np.arange(300, dtype=np.uint16).tofile(tmp_path / "ids.bin")
    with pytest.raises(UserError) as info:
        load_tokens(DataConfig(source=f"tokens:{tmp_path / 'ids.bin'}", vocab_size=vocab_size),
                    seq_len=8, cache_dir=tmp_path / "c")
    assert str(info.value).startswith("data.vocab_size:") and message in str(info.value)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.bin"))


@pytest.mark.parametrize("source, field", [
    ("ftp://example.org/corpus", "data.source"),
    ("parquet:", "data.source"),
    ("s3:bucket/key", "data.source"),
])
def test_unknown_or_incomplete_source_is_refused(tmp_path, source, field):
    with pytest.raises(UserError) as info:
        load_tokens(DataConfig(source=source), seq_len=8, cache_dir=tmp_path)
    assert str(info.value).startswith(field) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- resume

TOKENISE = ("import sys; from scaling.data import load_tokens; "
            "from scaling.config import DataConfig; "
            "load_tokens(DataConfig(source=sys.argv[1], tokenizer='bpe:300'), seq_len=16, "
            "cache_dir=sys.argv[2])")


def test_killed_tokenisation_resumes_to_the_uninterrupted_bytes(tmp_path):
    """Two worker processes, chunks of 4 documents; the process SIGKILLs itself after 3
    commits with a 4th chunk written but not committed. The rerun truncates that chunk,
    continues, and the entry equals an uninterrupted in-process build's byte for byte."""
    root = write_parquet(tmp_path / "pq", documents(90, seed=4), n_files=3)
    source = f"parquet:{root}"
    env = cli_env(tmp_path / "unused", SCALING_TOKENIZE_WORKERS="2",
                  SCALING_TOKENIZE_CHUNK_DOCS="4", SCALING_FAULT_TOKENIZE_KILL_AFTER="3")
    cache = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", TOKENISE, source, str(cache)], env=env,
                            capture_output=True, text=True, timeout=180, cwd=REPO)
    assert killed.returncode == -9, killed.stderr[-2000:]
    entry = next((cache / "tokens").glob("*-bpe300"))
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["docs_done"] == 12 and not (entry / "meta.json").exists()
    itemsize = 2
    partial = (entry / "train.bin.partial").stat().st_size + (entry / "valid.bin.partial").stat().st_size
    assert partial > (manifest["n_train"] + manifest["n_valid"]) * itemsize  # the uncommitted chunk

    env.pop("SCALING_FAULT_TOKENIZE_KILL_AFTER")
    resumed = subprocess.run([sys.executable, "-c", TOKENISE, source, str(cache)], env=env,
                             capture_output=True, text=True, timeout=180, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (entry / "manifest.json").exists() and (entry / "meta.json").exists()

    ref = load_tokens(DataConfig(source=source, tokenizer="bpe:300"), seq_len=16,
                      cache_dir=tmp_path / "whole")  # no workers: small source, in-process
    ref_entry = next((tmp_path / "whole" / "tokens").glob("*-bpe300"))
    assert ref_entry.name == entry.name
    for name in ("train.bin", "valid.bin"):
        assert (entry / name).read_bytes() == (ref_entry / name).read_bytes()
    assert json.loads((entry / "meta.json").read_text()) == json.loads(
        (ref_entry / "meta.json").read_text())
    assert ref.n_train_tokens > 0
