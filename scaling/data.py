"""Token streams for training and evaluation, cached on disk, and deterministic batches.

`load_tokens(data_cfg, seq_len=...)` reads the corpus named by `data.source`
(scaling.sources: "stdlib", "text:PATH", "parquet:PATH", "hf:NAME[:CONFIG][:SPLIT]",
"hf-disk:PATH", "synthetic[:...]"), tokenizes it with `data.tokenizer` (scaling.tokenizer:
"bytes", "bpe:V", "json:PATH"; in worker processes and resumably, scaling.token_cache) and
returns memory-mapped 1-D train and validation streams. Documents are joined with a
separator token (0 for bytes and bpe). "tokens:PATH" is already ids: its files are split in
blocks of TOKEN_BLOCK ids by the corpus hash rule (keys `<relpath>:<block>`) and copied
into the cache; its bits per byte are bits per token (no text to count bytes of).

Cache: `<cache_dir>/tokens/<corpus_hash[:20]>-<key digest>-<tokenizer>/{train,valid}.bin`
(raw uint16 when V <= 65535, else uint32) + `meta.json` (written last: its presence marks a
complete entry) and `<cache_dir>/tokenizers/<corpus_hash[:20]>-<key digest>-bpe<V>.json`.
The key (`_entry_key`, recorded in meta.json) holds everything that decides the cached
bytes besides the text: CACHE_FORMAT (the code's version), the tokenizer's identity and
the split parameters; an entry whose recorded key differs from the expected one is rebuilt.
cache_dir defaults to $SCALING_CACHE, else ~/.cache/scaling-suite. Every file is written
atomically, and a file lock keeps concurrent runs from tokenizing the same corpus twice.
The corpus hash is recomputed from the text on every load (about 0.2 s for the stdlib), so
an edited corpus never reuses stale tokens.

Batches: the training batch at step k is a pure function of (seed, k): window starts come
from Philox keyed by (seed, k), so resuming needs only the step. Evaluation uses fixed
contiguous windows from the start of the validation stream, identical for every run with
the same seq_len and eval_tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling import corpus as corpus_lib
from scaling import sources as sources_lib
from scaling import token_cache
from scaling import tokenizer as tokenizer_lib
from scaling.config import DataConfig
from scaling.errors import UserError
from scaling.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

# The version of the code that turns a corpus into cached bytes. BUMP IT whenever what an
# entry holds changes for the same corpus and settings: scaling/token_cache.py (documents to
# ids, which documents are skipped, train_bytes), scaling/tokenizer.py (encode_documents,
# train_bpe's settings), the split (scaling/corpus.py split_mask; its parameters are in the
# key already, see corpus.split_params), how scaling/sources.py turns files into documents,
# the synthetic sampler, or the builders below. It is part of every entry's key (directory
# name and meta.json), so an entry built by older code is rebuilt, never reused.
# 2: keys cover this version, the tokenizer's identity and the split parameters (format 1
# was keyed by the corpus hash and tokenizer tag alone, and reused entries of older code).
CACHE_FORMAT = 2
TOKEN_BLOCK = 1 << 16  # ids per split unit of a tokens: source


@dataclass(frozen=True)
class TokenData:
    train: np.ndarray  # 1-D token ids (a read-only memmap), documents separated by 0
    valid: np.ndarray  # 1-D held-out token ids
    vocab_size: int
    corpus_hash: str  # sha256 of the corpus text and split rule (goes in config.json)
    bytes_per_token: float  # train split: UTF-8 bytes (separator = 1 byte) per token
    source: str  # human-readable description of the corpus
    tokenizer: str  # the data.tokenizer spec
    entropy_floor: float | None = None  # nats/token, exact; synthetic source only

    @property
    def n_train_tokens(self) -> int:
        return int(self.train.shape[0])

    def info(self) -> dict:
        """JSON-ready summary for config.json / logs."""
        return {"corpus_hash": self.corpus_hash, "source": self.source,
                "tokenizer": self.tokenizer, "vocab_size": self.vocab_size,
                "n_train_tokens": self.n_train_tokens, "n_valid_tokens": int(self.valid.shape[0]),
                "bytes_per_token": self.bytes_per_token, "entropy_floor": self.entropy_floor}


def default_cache_dir() -> Path:
    env = os.environ.get("SCALING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scaling-suite"


def cache_path(cache_dir=None) -> Path:
    """`cache_dir`, or the default cache (SCALING_CACHE, else ~/.cache/scaling-suite)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def load_tokens(data_cfg: DataConfig, *, seq_len: int, cache_dir=None) -> TokenData:
    """Token streams for `data_cfg`, from the cache when present. Raises UserError for an
    unknown source/tokenizer, a missing or empty path, or data shorter than seq_len + 1."""
    spec = tokenizer_lib.parse_tokenizer(data_cfg.tokenizer)
    cache = cache_path(cache_dir)
    source = data_cfg.source
    kind = sources_lib.scheme(source)
    vocab_size = getattr(data_cfg, "vocab_size", None)
    if vocab_size is not None and kind != "tokens":
        raise UserError(f"data.vocab_size: only for a tokens: source (the tokenizer sets the "
                        f"vocabulary of {source!r})")
    if kind == "synthetic":
        data = _load_synthetic(source, spec, cache, data_cfg)
    elif kind == "tokens":
        data = _load_token_files(source, cache, data_cfg)
    else:
        docs = sources_lib.open_source(source, getattr(data_cfg, "text_column", "text"), cache)
        data = _load_documents(docs, spec, cache, data_cfg)
    _check_seq_len(data, seq_len, source)
    return data


def _check_seq_len(data: TokenData, seq_len: int, source: str) -> None:
    if not isinstance(seq_len, int) or seq_len < 1:
        raise UserError(f"model.seq_len: expected a positive integer, got {seq_len!r}")
    for split, tokens in (("training", data.train), ("validation", data.valid)):
        if tokens.shape[0] < seq_len + 1:
            raise UserError(
                f"model.seq_len: {seq_len} is longer than the {split} split of "
                f"data.source={source!r} ({tokens.shape[0]} tokens with data.tokenizer="
                f"{data.tokenizer!r}; need seq_len + 1)")


def _entry_key(corpus_hash: str, tokenizer: dict, split: dict) -> dict:
    """Everything besides the text that decides an entry's bytes (recorded in meta.json).
    JSON-ready (lists, not tuples), so a recorded key compares equal to a fresh one."""
    return {"format": CACHE_FORMAT, "corpus_hash": corpus_hash, "tokenizer": tokenizer,
            "split": split}


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _entry_dir(cache: Path, key: dict, tag: str) -> Path:
    return cache / "tokens" / f"{key['corpus_hash'][:20]}-{_key_digest(key)}-{tag}"


def _tokenizer_key(spec: tokenizer_lib.TokenizerSpec, bpe_json: str | None) -> dict:
    """A text tokenizer's identity: its kind and size, its separator, and the hash of the
    file that defines it (the pretrained json file, or the corpus's trained BPE)."""
    file_hash = spec.file_hash
    if bpe_json is not None:
        file_hash = hashlib.sha256(bpe_json.encode("utf-8")).hexdigest()
    return {"kind": spec.kind, "vocab_size": spec.vocab_size, "separator": spec.separator,
            "file_sha256": file_hash}


def _read_entry(entry: Path, dtype: np.dtype,
                key: dict) -> tuple[np.ndarray, np.ndarray, dict] | None:
    meta_path = entry / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:  # the key holds CACHE_FORMAT too
            return None  # built by other code or settings: rebuilt, never reused
        arrays = []
        for split in ("train", "valid"):
            n = meta[f"n_{split}"]
            path = entry / f"{split}.bin"
            if path.stat().st_size != n * dtype.itemsize:
                return None
            arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else
                          np.zeros(0, dtype))
    except (OSError, ValueError, KeyError):
        return None  # a damaged entry is rebuilt rather than trusted
    return arrays[0], arrays[1], meta


def _write_entry(entry: Path, train: np.ndarray, valid: np.ndarray, meta: dict) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(entry / "train.bin", np.ascontiguousarray(train).tobytes())
    atomic_write_bytes(entry / "valid.bin", np.ascontiguousarray(valid).tobytes())
    atomic_write_json(entry / "meta.json", {**meta, "n_train": int(train.shape[0]),
                                            "n_valid": int(valid.shape[0]),
                                            "format": CACHE_FORMAT})


def _drop_stale_meta(entry: Path) -> None:
    """Before a rebuild (under the entry's lock): a meta.json that did not validate goes
    first, so no meta.json ever stands beside files it does not describe."""
    (entry / "meta.json").unlink(missing_ok=True)


def _cached(entry: Path, dtype: np.dtype, key: dict,
            build) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return the cache entry, building it (once across processes) if missing or stale."""
    from filelock import FileLock

    hit = _read_entry(entry, dtype, key)
    if hit is not None:
        return hit
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        hit = _read_entry(entry, dtype, key)
        if hit is None:
            _drop_stale_meta(entry)
            train, valid, meta = build()
            _write_entry(entry, train, valid, {**meta, "key": key})
            hit = _read_entry(entry, dtype, key)
    assert hit is not None
    return hit


def _bpe_path(cache: Path, corpus_hash: str, spec) -> Path:
    # keyed like a token entry: the trainer's settings and the split it trains on decide it
    key = _entry_key(corpus_hash, {"kind": spec.kind, "vocab_size": spec.vocab_size},
                     corpus_lib.split_params())
    return cache / "tokenizers" / f"{corpus_hash[:20]}-{_key_digest(key)}-{spec.tag}.json"


def _bpe_tokenizer(docs: sources_lib.DocumentSource, spec, cache: Path) -> str:
    """The trained BPE of a corpus as JSON, trained once on its training documents."""
    from filelock import FileLock

    path = _bpe_path(cache, docs.corpus_hash, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return path.read_text(encoding="utf-8")
        is_valid = docs.is_valid
        train_texts = (t for i, t in enumerate(docs.read(0)) if not is_valid[i] and t)
        text = tokenizer_lib.train_bpe(train_texts, spec.vocab_size).to_str()
        atomic_write_text(path, text)
        return text


def bpe_tokenizer_path(corpus_hash: str, tokenizer: str, cache_dir=None) -> Path:
    """Where the trained BPE tokenizer of a corpus lives (for decoding samples)."""
    spec = tokenizer_lib.parse_tokenizer(tokenizer)
    cache = cache_path(cache_dir)
    return _bpe_path(cache, corpus_hash, spec)


def _load_documents(docs: sources_lib.DocumentSource, spec, cache: Path,
                    data_cfg: DataConfig) -> TokenData:
    # the trained BPE (read from its own cache when there) is part of the entry's key
    bpe_json = _bpe_tokenizer(docs, spec, cache) if spec.kind == "bpe" else None
    key = _entry_key(docs.corpus_hash, _tokenizer_key(spec, bpe_json), corpus_lib.split_params())
    entry = _entry_dir(cache, key, spec.tag)

    def build():
        counts = token_cache.build(entry, docs, spec, bpe_json, key)
        return {"corpus_hash": docs.corpus_hash, "tokenizer": data_cfg.tokenizer,
                "source": docs.description, **counts}

    train, valid, meta = _cached_entry(entry, spec.dtype, key, build)
    return TokenData(train=train, valid=valid, vocab_size=spec.vocab_size,
                     corpus_hash=docs.corpus_hash,
                     bytes_per_token=meta["train_bytes"] / max(train.shape[0], 1),
                     source=docs.description, tokenizer=data_cfg.tokenizer)


def _cached_entry(entry: Path, dtype: np.dtype, key: dict,
                  build) -> tuple[np.ndarray, np.ndarray, dict]:
    """Like _cached, for builders that write train.bin/valid.bin themselves (streaming)
    and return only the metadata; meta.json is written last."""
    from filelock import FileLock

    hit = _read_entry(entry, dtype, key)
    if hit is not None:
        return hit
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        hit = _read_entry(entry, dtype, key)
        if hit is None:
            _drop_stale_meta(entry)
            meta = build()
            atomic_write_json(entry / "meta.json", {**meta, "key": key, "format": CACHE_FORMAT})
            hit = _read_entry(entry, dtype, key)
    assert hit is not None
    return hit


def _load_token_files(source: str, cache: Path, data_cfg: DataConfig) -> TokenData:
    if data_cfg.tokenizer != "bytes":
        raise UserError(f"data.tokenizer: a tokens: source is already token ids; leave "
                        f"data.tokenizer unset, got {data_cfg.tokenizer!r}")
    vocab_size = getattr(data_cfg, "vocab_size", None)
    files = sources_lib.token_files(source.partition(":")[2], vocab_size, cache)
    assert vocab_size is not None  # token_files refuses a missing vocab_size
    corpus_hash = sources_lib.token_files_hash(files, vocab_size, cache)
    keys = [f"{f.rel}:{b}" for f in files for b in range(-(-f.ids.shape[0] // TOKEN_BLOCK))]
    is_valid = corpus_lib.split_mask(keys, "data.source")
    dtype = np.dtype(np.uint16 if vocab_size <= 65_535 else np.uint32)
    key = _entry_key(corpus_hash, {"kind": "ids", "vocab_size": vocab_size},
                     {**corpus_lib.split_params(), "token_block": TOKEN_BLOCK})
    entry = _entry_dir(cache, key, f"ids{vocab_size}")
    n_total = sum(f.ids.shape[0] for f in files)

    def build():
        entry.mkdir(parents=True, exist_ok=True)
        counts = {"train": 0, "valid": 0}
        outs = {s: open(entry / f"{s}.bin.partial", "wb") for s in counts}  # noqa: SIM115
        try:
            k = 0
            for f in files:
                for start in range(0, f.ids.shape[0], TOKEN_BLOCK):
                    split = "valid" if is_valid[k] else "train"
                    block = np.asarray(f.ids[start:start + TOKEN_BLOCK]).astype(dtype)
                    outs[split].write(block.tobytes())
                    counts[split] += block.shape[0]
                    k += 1
            for out in outs.values():
                out.flush()
                os.fsync(out.fileno())
        finally:
            for out in outs.values():
                out.close()
        for split in counts:
            os.replace(entry / f"{split}.bin.partial", entry / f"{split}.bin")
        return {"corpus_hash": corpus_hash, "tokenizer": "ids", "source": source,
                "train_bytes": counts["train"], "n_train": counts["train"],
                "n_valid": counts["valid"]}

    train, valid, _ = _cached_entry(entry, dtype, key, build)
    desc = f"{source} ({len(files)} files, {n_total} ids, vocabulary {vocab_size})"
    return TokenData(train=train, valid=valid, vocab_size=vocab_size, corpus_hash=corpus_hash,
                     bytes_per_token=1.0, source=desc, tokenizer=data_cfg.tokenizer)


def _load_synthetic(source: str, spec, cache: Path, data_cfg: DataConfig) -> TokenData:
    if spec.kind != "bytes":
        raise UserError("data.tokenizer: the synthetic source is already token ids; use "
                        "'bytes' (set the symbol count with synthetic:vocab=V)")
    params = corpus_lib.parse_synthetic(source)
    p_VxV, pi_V = corpus_lib.markov_chain(params["vocab"], params["seed"], params["alpha"])
    floor = corpus_lib.markov_entropy_rate(p_VxV, pi_V)
    corpus_hash = corpus_lib.synthetic_hash(params)
    n_valid = max(corpus_lib.SYNTHETIC_VALID_TOKENS, data_cfg.eval_tokens + 1)
    tag = f"markov-v{params['vocab']}-nv{n_valid}"
    seeds = [3 * params["seed"] + 1, 3 * params["seed"] + 2]  # train, valid sample paths
    key = _entry_key(corpus_hash, {"kind": "symbols", "vocab_size": params["vocab"]},
                     {"n_valid": n_valid, "seeds": seeds})

    def build():
        train = corpus_lib.sample_markov(p_VxV, pi_V, params["tokens"], seeds[0])
        valid = corpus_lib.sample_markov(p_VxV, pi_V, n_valid, seeds[1])
        return train, valid, {"corpus_hash": corpus_hash, "tokenizer": "symbols",
                              "source": source, "train_bytes": params["tokens"]}

    train, valid, _ = _cached(_entry_dir(cache, key, tag), spec.dtype, key, build)
    desc = (f"synthetic order-1 Markov chain ({params['vocab']} symbols, alpha "
            f"{params['alpha']}, seed {params['seed']}, entropy rate {floor:.4f} nats)")
    return TokenData(train=train, valid=valid, vocab_size=params["vocab"],
                     corpus_hash=corpus_hash, bytes_per_token=1.0, source=desc,
                     tokenizer=data_cfg.tokenizer, entropy_floor=floor)


# ---------------------------------------------------------------------------------------
# Batches

def _window_starts(n_tokens: int, *, seed: int, step: int, batch_size: int,
                   seq_len: int) -> np.ndarray:
    n_starts = n_tokens - seq_len  # a window holds seq_len + 1 tokens
    if n_starts < 1:
        raise UserError(f"model.seq_len: {seq_len} is longer than the training data "
                        f"({n_tokens} tokens)")
    if not (0 <= seed < 2**63 and 0 <= step < 2**63):
        raise ValueError(f"seed and step must be in [0, 2**63), got {seed}, {step}")
    # Philox is counter-based: the key (seed, step) alone fixes the draw, no carried state.
    rng = np.random.Generator(np.random.Philox(key=(int(seed) << 64) | int(step)))
    return rng.integers(0, n_starts, size=batch_size)


def train_batch(tokens_1d: np.ndarray, *, seed: int, step: int, batch_size: int,
                seq_len: int, rows: slice | None = None) -> np.ndarray:
    """int32 [batch_size, seq_len + 1]: uniformly random windows, a pure function of
    (seed, step) and the stream. `rows` picks rows of that batch and reads only their
    tokens (a process of a multi-host run builds only its own slice)."""
    starts_B = _window_starts(tokens_1d.shape[0], seed=seed, step=step, batch_size=batch_size,
                              seq_len=seq_len)
    if rows is not None:
        starts_B = starts_B[rows]
    idx_BxL1 = starts_B[:, None] + np.arange(seq_len + 1)[None, :]
    return np.asarray(tokens_1d[idx_BxL1], dtype=np.int32)


def eval_windows(n_valid_tokens: int, *, eval_tokens: int, seq_len: int) -> int:
    """Number of evaluation windows: ceil(eval_tokens / seq_len), capped by the stream."""
    available = (n_valid_tokens - 1) // seq_len
    return min(math.ceil(eval_tokens / seq_len), available)


def eval_batches(valid_1d: np.ndarray, *, eval_tokens: int, batch_size: int,
                 seq_len: int) -> list[np.ndarray]:
    """Fixed evaluation set: windows i = valid[i*seq_len : i*seq_len + seq_len + 1] for
    i < ceil(eval_tokens / seq_len), so every target token is scored once. Grouped into
    int32 batches of batch_size rows; the last batch may be smaller. The windows depend
    only on (seq_len, eval_tokens), never on batch_size. Warns when the validation stream
    holds fewer than eval_tokens targets and uses what there is."""
    n_windows = eval_windows(valid_1d.shape[0], eval_tokens=eval_tokens, seq_len=seq_len)
    if n_windows < 1:
        raise UserError(f"model.seq_len: {seq_len} is longer than the validation data "
                        f"({valid_1d.shape[0]} tokens)")
    if n_windows * seq_len < eval_tokens:
        warnings.warn(f"validation split has only {n_windows * seq_len} target tokens at "
                      f"seq_len {seq_len}; data.eval_tokens={eval_tokens} asked for more",
                      stacklevel=2)
    windows_WxL1 = np.lib.stride_tricks.sliding_window_view(
        np.asarray(valid_1d[: n_windows * seq_len + 1]), seq_len + 1)[::seq_len]
    windows_WxL1 = windows_WxL1.astype(np.int32)
    return [windows_WxL1[i:i + batch_size] for i in range(0, n_windows, batch_size)]


def epochs(n_tokens_trained: float, token_data: TokenData) -> float:
    """Passes over the unique training tokens (> 1 means data-constrained: repeated data)."""
    return float(n_tokens_trained) / max(token_data.n_train_tokens, 1)


def check_max_epochs(n_tokens_trained: float, token_data: TokenData,
                     max_epochs: float | None) -> float:
    """Epochs of a planned run; UserError naming data.max_epochs when it needs more."""
    n_epochs = epochs(n_tokens_trained, token_data)
    if max_epochs is not None and n_epochs > max_epochs:
        raise UserError(f"data.max_epochs: the run needs {n_epochs:.2f} passes over the "
                        f"{token_data.n_train_tokens} unique training tokens, more than "
                        f"{max_epochs}")
    return n_epochs


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy (nats) of the tokens' empirical unigram distribution: the loss of the best
    context-free predictor, which any trained model must beat."""
    flat = np.asarray(tokens).ravel()
    counts = np.zeros(1, np.int64)
    for i in range(0, flat.shape[0], 1 << 22):  # chunks: no int64 copy of a 30M stream
        chunk = np.bincount(flat[i:i + (1 << 22)].astype(np.int64))
        counts = np.pad(counts, (0, max(0, len(chunk) - len(counts))))
        counts[:len(chunk)] += chunk
    if counts.sum() == 0:
        raise ValueError("unigram_entropy: no tokens")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())

