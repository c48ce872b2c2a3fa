"""Text corpora (the `data.source` field) read into documents with a train/validation split,
and the synthetic Markov source with an exactly known entropy floor.

Sources:
- "stdlib": every `*.py` under `sysconfig.get_paths()["stdlib"]`, sorted by relative path,
  decoded as UTF-8 with errors="replace". `site-packages`/`dist-packages` are excluded: they
  hold whatever the user installed, not the standard library, and would make the corpus
  (and its hash) depend on the environment. The stdlib's own `test/` package is kept.
  One file is one document and one split unit (docs/architecture.md: split by a hash of the path).
- "text:PATH": a text file, a `.jsonl` file (one object per line with a string "text"), or
  a directory of them (recursively, sorted; names starting with "." are skipped, and so are
  files whose first 8 KiB contain a NUL byte, i.e. binaries). A JSONL record is a document
  and a split unit; a plain file is a document split into units of 100 lines, so a single
  file still gets a validation part.
- "synthetic": see `markov_chain`; it yields token ids directly (no text).

Split: a unit goes to validation when the first 8 bytes of sha256(key) as an integer are
0 mod 100 (about 1 unit in 100); if that picks none, the unit with the smallest such hash
does, so every corpus of two or more units has both splits. Keys are relative paths
(plus ":block" / "#line"), so the split does not depend on where the corpus lives.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.errors import UserError

CORPUS_VERSION = "scaling-corpus-v1"  # bump when reading or splitting rules change
VALID_MODULUS = 100
LINES_PER_UNIT = 100
SYNTHETIC_DEFAULTS = {"tokens": 1_000_000, "vocab": 256, "seed": 0, "alpha": 0.05}
SYNTHETIC_VALID_TOKENS = 262_144
EXCLUDED_DIRS = ("site-packages", "dist-packages")  # of the stdlib: not its own code


@dataclass(frozen=True)
class Unit:
    """A piece of text assigned wholly to one split; `doc` groups units of one document."""
    key: str
    doc: int
    text: str


@dataclass(frozen=True)
class Corpus:
    train: list[Unit]
    valid: list[Unit]
    corpus_hash: str
    description: str


def _unit_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def split_mask(keys: list[str], where: str) -> np.ndarray:
    """bool per key, True = validation (the hash rule of the module docstring). Needs only
    the keys, so a streaming source can split before reading any text."""
    if len(keys) < 2:
        raise UserError(f"{where}: corpus too small to split into train and validation "
                        f"({len(keys)} unit; need at least 2 files, records or "
                        f"{LINES_PER_UNIT}-line blocks)")
    hashes = np.fromiter((_unit_hash(k) for k in keys), dtype=np.uint64, count=len(keys))
    is_valid = hashes % VALID_MODULUS == 0
    if not is_valid.any():
        is_valid[int(np.argmin(hashes))] = True
    if is_valid.all():
        is_valid[int(np.argmax(hashes))] = False
    return is_valid


def split_params() -> dict:
    """The parameters of the split rule (JSON-ready), for the keys of what depends on it
    (scaling.data's token cache). Read at call time, so a changed value changes the key."""
    return {"version": CORPUS_VERSION, "valid_modulus": VALID_MODULUS,
            "lines_per_unit": LINES_PER_UNIT}


def split_units(units: list[Unit], where: str) -> tuple[list[Unit], list[Unit]]:
    """Hash split (see module docstring); keeps the units' order within each split."""
    is_valid = split_mask([u.key for u in units], where)
    train = [u for u, v in zip(units, is_valid, strict=True) if not v]
    valid = [u for u, v in zip(units, is_valid, strict=True) if v]
    return train, valid


def _hash_units(kind: str, units: list[Unit]) -> str:
    h = hashlib.sha256(f"{CORPUS_VERSION}\0{kind}\0".encode())
    for u in units:
        data = u.text.encode("utf-8")
        h.update(f"{u.key}\0{u.doc}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path) -> list[str]:
    """Relative paths of the stdlib's `*.py` files, sorted. The walk never enters a
    `site-packages`/`dist-packages` directory (in some installs the stdlib's holds tens of
    thousands of files: 0.3-0.7 s of every run start here, only to be dropped); as
    `Path.rglob`, it does not follow symlinked directories."""
    rels = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        rel = Path(folder).relative_to(root)
        rels += [(rel / n).as_posix() for n in names
                 if n.endswith(".py") and (Path(folder) / n).is_file()]
    return sorted(rels)


def read_stdlib() -> Corpus:
    root = stdlib_root()
    rels = stdlib_files(root)
    units = [Unit(rel, i, (root / rel).read_bytes().decode("utf-8", errors="replace"))
             for i, rel in enumerate(rels)]
    if not units:
        raise UserError(f"data.source: 'stdlib' found no *.py files under {root}")
    train, valid = split_units(units, "data.source")
    n_bytes = sum(len(u.text.encode("utf-8")) for u in units)
    desc = f"stdlib ({root}, {len(units)} files, {n_bytes / 1e6:.1f} MB)"
    return Corpus(train, valid, _hash_units("stdlib", units), desc)


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def _jsonl_units(path: Path, rel: str, doc_start: int) -> list[Unit]:
    units: list[Unit] = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"data.source: {path}:{line_no}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise UserError(f"data.source: {path}:{line_no}: expected an object with a "
                            f"string \"text\" field")
        # JSON escapes can encode lone surrogates, which are not valid UTF-8 (tokenizers and
        # hashing need UTF-8): replace them like undecodable bytes elsewhere.
        clean = record["text"].encode("utf-8", errors="replace").decode("utf-8")
        if clean:
            units.append(Unit(f"{rel}#{line_no}", doc_start + len(units), clean))
    return units


def _text_units(path: Path, rel: str, doc: int) -> list[Unit]:
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines(keepends=True)
    return [Unit(f"{rel}:{i // LINES_PER_UNIT}", doc, "".join(lines[i:i + LINES_PER_UNIT]))
            for i in range(0, len(lines), LINES_PER_UNIT)]


def read_text(spec: str) -> Corpus:
    raw = spec[len("text:"):]
    if not raw:
        raise UserError("data.source: 'text:' needs a path (text:PATH)")
    root = Path(raw).expanduser()
    if not root.exists():
        raise UserError(f"data.source: {raw}: no such file or directory")
    if root.is_dir():
        files = sorted(
            (p for p in root.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)),
            key=lambda p: p.relative_to(root).as_posix())
        base = root
    else:
        files, base = [root], root.parent
    units: list[Unit] = []
    doc = 0
    for path in files:
        if _is_binary(path):
            continue
        rel = path.relative_to(base).as_posix()
        if path.suffix == ".jsonl":
            new = _jsonl_units(path, rel, doc)
            doc += len(new)
        else:
            new = _text_units(path, rel, doc)
            doc += 1
        units.extend(u for u in new if u.text)
    if not units or not any(u.text.strip() for u in units):
        raise UserError(f"data.source: {raw}: contains no text")
    train, valid = split_units(units, "data.source")
    n_bytes = sum(len(u.text.encode("utf-8")) for u in units)
    desc = f"text:{raw} ({len(files)} files, {n_bytes / 1e6:.2f} MB)"
    return Corpus(train, valid, _hash_units("text", units), desc)


# ---------------------------------------------------------------------------------------
# Synthetic source: a random order-1 Markov chain whose entropy rate is known exactly.

def parse_synthetic(spec: str) -> dict:
    """'synthetic' or 'synthetic:tokens=N,vocab=V,seed=S,alpha=A' (any subset)."""
    params = dict(SYNTHETIC_DEFAULTS)
    rest = spec[len("synthetic"):]
    if rest and not rest.startswith(":"):
        raise UserError(f"data.source: expected 'synthetic[:tokens=N,vocab=V,seed=S,alpha=A]', "
                        f"got {spec!r}")
    for item in filter(None, rest[1:].split(",")):
        name, _, value = item.partition("=")
        if name not in params:
            raise UserError(f"data.source: unknown synthetic option {name!r} "
                            f"(expected {', '.join(SYNTHETIC_DEFAULTS)})")
        try:
            params[name] = float(value) if name == "alpha" else int(value)
        except ValueError:
            raise UserError(f"data.source: synthetic {name}={value!r} is not a number") from None
    if params["tokens"] < 2 or not 2 <= params["vocab"] <= 4096 or params["seed"] < 0:
        raise UserError(f"data.source: synthetic needs tokens >= 2, 2 <= vocab <= 4096, "
                        f"seed >= 0; got {spec!r}")
    if not (math.isfinite(params["alpha"]) and params["alpha"] > 0):
        raise UserError(f"data.source: synthetic alpha must be > 0, got {params['alpha']}")
    return params


def markov_chain(vocab: int, seed: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Transition matrix P (rows ~ Dirichlet(alpha)) and its stationary distribution pi.

    Smaller alpha gives peakier rows and a lower entropy rate (E[H(row)] =
    digamma(vocab*alpha + 1) - digamma(alpha + 1)); the default 0.05 over 256 symbols
    gives about 3 nats against a unigram entropy near log(256) = 5.5.
    """
    rng = np.random.Generator(np.random.Philox(key=3 * seed))
    p_VxV = rng.dirichlet(np.full(vocab, alpha), size=vocab)
    # Dirichlet draws can underflow to an all-zero-but-one row; mix in a tiny floor so the
    # chain is irreducible and pi is unique.
    p_VxV = p_VxV + 1e-9
    p_VxV /= p_VxV.sum(axis=1, keepdims=True)
    pi_V = np.full(vocab, 1.0 / vocab)
    for _ in range(100_000):  # power iteration: cheap even at vocab 4096, unlike eig
        new_V = pi_V @ p_VxV
        if np.abs(new_V - pi_V).sum() < 1e-13:
            break
        pi_V = new_V
    return p_VxV, new_V / new_V.sum()


def markov_entropy_rate(p_VxV: np.ndarray, pi_V: np.ndarray) -> float:
    """H = -sum_i pi_i sum_j P_ij log P_ij, nats per token: the best achievable loss."""
    row_entropy_V = -np.sum(np.where(p_VxV > 0, p_VxV * np.log(p_VxV), 0.0), axis=1)
    return float(pi_V @ row_entropy_V)


def sample_markov(p_VxV: np.ndarray, pi_V: np.ndarray, n_tokens: int, seed: int,
                  dtype=np.uint16) -> np.ndarray:
    """A stationary sample path (first token ~ pi), exactly from the chain."""
    rng = np.random.Generator(np.random.Philox(key=seed))
    u = rng.random(n_tokens).tolist()
    cum_rows = [row.tolist() for row in np.cumsum(p_VxV, axis=1)]
    last = p_VxV.shape[0] - 1
    out = [0] * n_tokens
    x = min(bisect.bisect(np.cumsum(pi_V).tolist(), u[0]), last)
    out[0] = x
    for i in range(1, n_tokens):
        x = min(bisect.bisect(cum_rows[x], u[i]), last)
        out[i] = x
    return np.array(out, dtype=dtype)


def synthetic_hash(params: dict) -> str:
    text = f"{CORPUS_VERSION}\0synthetic\0" + json.dumps(params, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
