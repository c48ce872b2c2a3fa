"""The `data.source` schemes, and every text source as one ordered stream of documents.

Schemes (`parse_source`):
- "stdlib", "text:PATH", "synthetic[:...]": scaling.corpus.
- "parquet:PATH": a Parquet file, or a directory of `*.parquet` files (recursively, sorted
  by relative path, names starting with "." skipped). One row is one document; its text is
  the string column named by `data.text_column` (default "text"; null rows are empty).
- "hf:NAME[:CONFIG][:SPLIT]": a Hugging Face dataset through `datasets.load_dataset`
  (its own cache, `HF_HOME`/`HF_DATASETS_CACHE`; `HF_DATASETS_OFFLINE=1` never touches the
  network). SPLIT defaults to "train"; `hf:NAME::SPLIT` names a split without a config.
- "hf-disk:PATH": what `Dataset.save_to_disk` wrote (a `DatasetDict` uses its "train").
- "tokens:PATH": pre-tokenized ids (scaling.data reads them; see `token_files`).

Split: the corpus rule (scaling.corpus.split_mask) on document keys: `<relpath>#<row>` for
Parquet, `#<row>` for datasets, so the split depends neither on where the files live nor
on how the rows are read. Keys come from row counts alone, so the split is known before any
text is read and a resumed tokenisation restarts at a document index.

Corpus hash: sha256 over the scheme, the text column and the bytes of every data file
(Parquet files; the Arrow files of a dataset), so two sources share a hash, and so a
token cache or a run, only when they hold the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from scaling import corpus as corpus_lib
from scaling import file_memo
from scaling.errors import UserError

SCHEMES = ("stdlib", "synthetic", "text", "parquet", "hf", "hf-disk", "tokens")
EXPECTED = ("'stdlib', 'synthetic[:...]', 'text:PATH', 'parquet:PATH', "
            "'hf:NAME[:CONFIG][:SPLIT]', 'hf-disk:PATH' or 'tokens:PATH'")
HASH_VERSION = "scaling-sources-v1"
READ_ROWS = 1024  # rows per read from Parquet or Arrow


@dataclass(frozen=True)
class DocumentSource:
    """A text corpus as documents in a fixed order, each wholly in one split."""
    corpus_hash: str
    description: str
    is_valid: np.ndarray  # bool per document: True = validation
    n_bytes: int  # size of the data files (a hint for how to tokenise: workers or not)
    read: Callable[[int], Iterator[str]]  # the documents' texts from index `start` on

    @property
    def n_docs(self) -> int:
        return int(self.is_valid.shape[0])


def scheme(source) -> str:
    """The scheme of a `data.source` string; UserError for anything else."""
    if not isinstance(source, str):
        raise UserError(f"data.source: expected {EXPECTED}, got {source!r}")
    if source in ("stdlib", "synthetic") or source.startswith("synthetic:"):
        return source.split(":")[0]
    name, sep, rest = source.partition(":")
    if not sep or name not in SCHEMES or name in ("stdlib", "synthetic"):
        raise UserError(f"data.source: unknown source {source!r} (expected {EXPECTED})")
    if not rest:
        raise UserError(f"data.source: {name}: needs a {'NAME' if name == 'hf' else 'PATH'}, "
                        f"e.g. '{name}:{'wikitext:wikitext-2-raw-v1' if name == 'hf' else 'corpus/'}'")
    return name


def open_source(source: str, text_column: str = "text", cache: Path | None = None) -> DocumentSource:
    """The documents of a text source (stdlib, text:, parquet:, hf:, hf-disk:). With a
    `cache`, the hash of data files unchanged since it was last computed is not recomputed
    (scaling.file_memo)."""
    kind = scheme(source)
    rest = source.partition(":")[2]
    if kind == "stdlib":
        return from_corpus(corpus_lib.read_stdlib())
    if kind == "text":
        return from_corpus(corpus_lib.read_text(source))
    if kind == "parquet":
        return read_parquet(rest, text_column, cache)
    if kind == "hf":
        return read_hf(rest, text_column, cache)
    if kind == "hf-disk":
        return read_hf_disk(rest, text_column, cache)
    raise ValueError(f"open_source: {kind} is not a text source")


def validate(source: str, *, text_column: str = "text", vocab_size: int | None = None) -> None:
    """The checks a launcher can afford before it writes anything: the scheme, that paths
    exist, Parquet files hold the text column (footers only), token files fit the declared
    vocabulary (one pass over the ids). Hub datasets are checked when a run loads them."""
    kind = scheme(source)
    rest = source.partition(":")[2]
    if kind == "parquet":
        parquet_files(rest, text_column)
    elif kind == "tokens":
        token_files(rest, vocab_size)
    elif kind in ("text", "hf-disk") and not Path(rest).expanduser().exists():
        raise UserError(f"data.source: {rest}: no such file or directory")


def from_corpus(corpus: corpus_lib.Corpus) -> DocumentSource:
    """An in-memory corpus (stdlib, text:) as a stream: the training documents in order,
    then the validation ones, consecutive units of one file joined (as before streaming)."""
    train, valid = _documents(corpus.train), _documents(corpus.valid)
    docs = train + valid
    is_valid = np.zeros(len(docs), bool)
    is_valid[len(train):] = True
    n_bytes = sum(len(d) for d in docs)  # characters: close enough for a hint
    return DocumentSource(corpus.corpus_hash, corpus.description, is_valid, n_bytes,
                          lambda start: iter(docs[start:]))


def _documents(units: list[corpus_lib.Unit]) -> list[str]:
    docs: list[str] = []
    last = None
    for u in units:
        if u.doc == last:
            docs[-1] += u.text
        else:
            docs.append(u.text)
        last = u.doc
    return docs


def _hash_files(kind: str, column: str, files: list[tuple[str, Path]],
                cache: Path | None = None) -> str:
    def compute() -> str:
        h = hashlib.sha256(f"{HASH_VERSION}\0{kind}\0{column}\0".encode())
        for rel, path in files:
            h.update(f"{rel}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
        return h.hexdigest()

    what = json.dumps(["sha256", HASH_VERSION, kind, column, [rel for rel, _ in files]])
    return file_memo.remembered(cache, what, [path for _, path in files], compute)


def _list_files(raw: str, suffixes: tuple[str, ...], what: str) -> tuple[Path, list[Path]]:
    root = Path(raw).expanduser()
    if not root.exists():
        raise UserError(f"data.source: {raw}: no such file or directory")
    if root.is_file():
        return root.parent, [root]
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise UserError(f"data.source: {raw}: holds no {what} files "
                        f"({', '.join('*' + s for s in suffixes)})")
    return root, files


# ----------------------------------------------------------------------------- Parquet

def read_parquet(raw: str, column: str, cache: Path | None = None) -> DocumentSource:
    import pyarrow.parquet as pq

    files, rows = parquet_files(raw, column)
    keys = [f"{rel}#{i}" for (rel, _), n_rows in zip(files, rows, strict=True)
            for i in range(n_rows)]
    is_valid = corpus_lib.split_mask(keys, "data.source")
    n_bytes = sum(p.stat().st_size for _, p in files)

    def read(start: int) -> Iterator[str]:
        offset = 0
        for (_, path), n_rows in zip(files, rows, strict=True):
            if offset + n_rows <= start:
                offset += n_rows
                continue
            for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS,
                                                           columns=[column]):
                texts = batch.column(0).to_pylist()
                skip = max(0, start - offset)
                offset += len(texts)
                for text in texts[skip:]:
                    yield text or ""

    desc = f"parquet:{raw} ({len(files)} files, {len(keys)} rows, {n_bytes / 1e6:.2f} MB)"
    return DocumentSource(_hash_files("parquet", column, files, cache), desc, is_valid, n_bytes,
                          read)


def parquet_files(raw: str, column: str) -> tuple[list[tuple[str, Path]], list[int]]:
    """(relative path, path) and row count of every file, each checked (from its footer
    only) to hold a string column `column`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base, paths = _list_files(raw, (".parquet",), "Parquet")
    files, rows = [], []
    for path in paths:
        rel = path.relative_to(base).as_posix()
        try:
            schema = pq.read_schema(path)
            n_rows = pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"data.source: {path}: not a readable Parquet file "
                            f"({str(e).splitlines()[0][:120]})") from None
        if column not in schema.names:
            raise UserError(f"data.text_column: {path} has no column {column!r} "
                            f"(columns: {', '.join(schema.names) or 'none'})")
        if not (pa.types.is_string(schema.field(column).type)
                or pa.types.is_large_string(schema.field(column).type)):
            raise UserError(f"data.text_column: column {column!r} of {path} holds "
                            f"{schema.field(column).type}, expected strings")
        files.append((rel, path))
        rows.append(n_rows)
    return files, rows


# ----------------------------------------------------------------------------- datasets

def parse_hf(raw: str) -> tuple[str, str | None, str]:
    """'NAME[:CONFIG][:SPLIT]' -> (name, config or None, split, default "train")."""
    parts = raw.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UserError(f"data.source: expected 'hf:NAME[:CONFIG][:SPLIT]', got 'hf:{raw}'")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


def read_hf(raw: str, column: str, cache: Path | None = None) -> DocumentSource:
    import datasets

    name, config, split = parse_hf(raw)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # missing, offline, bad config or split: all the user's input
        raise UserError(f"data.source: hf:{raw}: could not load ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    return _from_dataset(ds, column, f"hf:{raw}", "hf", cache)


def read_hf_disk(raw: str, column: str, cache: Path | None = None) -> DocumentSource:
    import datasets

    path = Path(raw).expanduser()
    if not path.is_dir():
        raise UserError(f"data.source: hf-disk:{raw}: no such directory")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"data.source: hf-disk:{raw}: not a save_to_disk directory "
                        f"({str(e).splitlines()[0][:160]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise UserError(f"data.source: hf-disk:{raw}: a DatasetDict without a 'train' "
                            f"split (has {', '.join(ds)})")
        ds = ds["train"]
    return _from_dataset(ds, column, f"hf-disk:{raw}", "hf-disk", cache)


def _from_dataset(ds, column: str, label: str, kind: str, cache: Path | None) -> DocumentSource:
    if column not in ds.column_names:
        raise UserError(f"data.text_column: {label} has no column {column!r} "
                        f"(columns: {', '.join(ds.column_names)})")
    feature = ds.features[column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise UserError(f"data.text_column: column {column!r} of {label} holds {feature}, "
                        f"expected strings")
    n_rows = ds.num_rows
    is_valid = corpus_lib.split_mask([f"#{i}" for i in range(n_rows)], "data.source")
    # The Arrow files behind the dataset are its content; both schemes hash them the same
    # way, so the same rows from the hub cache or from save_to_disk differ only by scheme.
    files = sorted({Path(f["filename"]) for f in ds.cache_files})
    if files:
        corpus_hash = _hash_files(kind, column, [(p.name, p) for p in files], cache)
        n_bytes = sum(p.stat().st_size for p in files)
    else:  # an in-memory dataset: hash its text
        h = hashlib.sha256(f"{HASH_VERSION}\0{kind}-memory\0{column}\0".encode())
        n_bytes = 0
        for i in range(0, n_rows, READ_ROWS):
            for text in ds[i:i + READ_ROWS][column]:
                data = (text or "").encode("utf-8")
                n_bytes += len(data)
                h.update(f"{len(data)}\0".encode())
                h.update(data)
        corpus_hash = h.hexdigest()

    def read(start: int) -> Iterator[str]:
        for i in range(start, n_rows, READ_ROWS):
            for text in ds[i:i + READ_ROWS][column]:
                yield text or ""

    desc = f"{label} ({n_rows} rows, column {column!r}, {n_bytes / 1e6:.2f} MB)"
    return DocumentSource(corpus_hash, desc, is_valid, n_bytes, read)


# ----------------------------------------------------------------------------- token files

@dataclass(frozen=True)
class TokenFile:
    rel: str
    path: Path
    ids: np.ndarray  # 1-D read-only memmap


def token_files(raw: str, vocab_size: int | None, cache: Path | None = None) -> list[TokenFile]:
    """Pre-tokenized files of `tokens:PATH`, checked against `data.vocab_size`. `.npy`: a 1-D unsigned or signed integer array. `.bin`: raw ids with no
    header, as nanoGPT's prepare scripts (and Levanter-style exporters) write them:
    uint16 when vocab_size <= 65536, else uint32."""
    if vocab_size is None:
        raise UserError("data.vocab_size: required with a tokens: source (the vocabulary "
                        "the ids were made with, e.g. 50257 for GPT-2)")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise UserError(f"data.vocab_size: expected an integer >= 2, got {vocab_size!r}")
    base, paths = _list_files(raw, (".bin", ".npy"), "token")
    out = []
    bin_dtype = np.dtype(np.uint16 if vocab_size <= 65_536 else np.uint32)
    for path in paths:
        rel = path.relative_to(base).as_posix()
        if path.suffix == ".npy":
            try:
                ids = np.load(path, mmap_mode="r")
            except ValueError as e:
                raise UserError(f"data.source: {path}: not a .npy array ({e})") from None
            if ids.ndim != 1 or ids.dtype.kind not in "ui":
                raise UserError(f"data.source: {path}: expected a 1-D integer array, got "
                                f"{ids.dtype} of shape {ids.shape}")
        else:
            if path.stat().st_size % bin_dtype.itemsize:
                raise UserError(f"data.source: {path}: {path.stat().st_size} bytes is not a "
                                f"whole number of {bin_dtype} ids (data.vocab_size "
                                f"{vocab_size} implies {bin_dtype})")
            ids = np.memmap(path, dtype=bin_dtype, mode="r")
        file_memo.remembered(cache, json.dumps(["ids below", vocab_size, str(ids.dtype)]), [path],
                             partial(_check_ids, ids, vocab_size, path))
        out.append(TokenFile(rel, path, ids))
    return out


def token_files_hash(files: list[TokenFile], vocab_size: int, cache: Path | None = None) -> str:
    """Corpus hash of token files: their bytes, dtypes and the declared vocabulary."""
    dtypes = ",".join(str(f.ids.dtype) for f in files)
    h = _hash_files("tokens", dtypes, [(f.rel, f.path) for f in files], cache)
    return hashlib.sha256(f"{h}\0{vocab_size}".encode()).hexdigest()


def _check_ids(ids: np.ndarray, vocab_size: int, path: Path) -> str:
    """"ok" (the value scaling.file_memo remembers) when every id is in [0, vocab_size)."""
    step = 1 << 24
    for i in range(0, ids.shape[0], step):
        block = np.asarray(ids[i:i + step])
        if block.size == 0:
            continue
        hi, lo = int(block.max()), int(block.min())
        if hi >= vocab_size or lo < 0:
            bad = hi if hi >= vocab_size else lo
            raise UserError(f"data.vocab_size: {path} holds token id {bad}, outside "
                            f"[0, {vocab_size}) (ids must be below data.vocab_size)")
    return "ok"
