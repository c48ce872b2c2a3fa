"""Tokenizers (the `data.tokenizer` field): "bytes", "bpe:V" and "json:PATH".

"bytes": UTF-8 bytes, vocab 256; documents are separated by byte 0 (NUL), which Python
source and ordinary text never contain, so it acts as an end-of-document token.
"bpe:V": byte-level BPE with V tokens in all, trained with HF `tokenizers` on the training
split only, id 0 = "<|endoftext|>" separating documents. Training is deterministic for a
given corpus, and the trained tokenizer is cached by corpus hash (see scaling.data).
"json:PATH": a pretrained HF `tokenizers` file (a `tokenizer.json`, e.g. GPT-2's or
Llama's), used as it is. Its vocabulary size (added tokens included) is the model's, and
documents are separated by its end-of-document token: the first of SEPARATORS it defines.
The cache key includes a hash of the file, so an edited tokenizer never reuses tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from scaling.errors import UserError

EOT = "<|endoftext|>"
MAX_VOCAB = 2**32 - 1
# End-of-document tokens of common pretrained tokenizers (GPT-2/NeoX, Llama/T5, Gemma, BERT)
SEPARATORS = (EOT, "</s>", "<eos>", "[SEP]")


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str  # "bytes" | "bpe" | "json"
    vocab_size: int
    path: str | None = None  # json: the tokenizer file
    file_hash: str | None = None  # json: sha256 of the file
    separator: int = 0  # the id that ends every document

    @property
    def tag(self) -> str:
        if self.kind == "json":
            assert self.file_hash is not None  # every json spec carries its file's hash
            return f"json{self.vocab_size}-{self.file_hash[:12]}"
        return "bytes" if self.kind == "bytes" else f"bpe{self.vocab_size}"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.vocab_size <= 65_535 else np.uint32)


def parse_tokenizer(spec: str) -> TokenizerSpec:
    if spec == "bytes":
        return TokenizerSpec("bytes", 256)
    if isinstance(spec, str) and spec.startswith("bpe:"):
        try:
            vocab = int(spec[4:])
        except ValueError:
            vocab = -1
        # 256 byte symbols + the end-of-text token is the smallest byte-level vocabulary.
        if not 257 <= vocab <= MAX_VOCAB:
            raise UserError(f"data.tokenizer: expected 'bpe:V' with an integer V >= 257, "
                            f"got {spec!r}")
        return TokenizerSpec("bpe", vocab)
    if isinstance(spec, str) and spec.startswith("json:"):
        return _parse_json(spec[len("json:"):])
    raise UserError(f"data.tokenizer: expected 'bytes', 'bpe:V' or 'json:PATH', got {spec!r}")


def _parse_json(raw: str) -> TokenizerSpec:
    import hashlib
    from pathlib import Path

    from tokenizers import Tokenizer

    path = Path(raw).expanduser()
    if not raw or not path.is_file():
        raise UserError(f"data.tokenizer: json:{raw}: expected a tokenizer.json file")
    data = path.read_bytes()
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise UserError(f"data.tokenizer: json:{raw}: not a tokenizers file "
                        f"({str(e).splitlines()[0][:120]})") from None
    sep = next((tok.token_to_id(t) for t in SEPARATORS if tok.token_to_id(t) is not None), None)
    if sep is None:
        raise UserError(f"data.tokenizer: json:{raw}: defines none of the end-of-document "
                        f"tokens {', '.join(SEPARATORS)}")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    return TokenizerSpec("json", vocab, str(path), hashlib.sha256(data).hexdigest(), sep)


def load(spec: TokenizerSpec, bpe_json: str | None = None):
    """The `tokenizers.Tokenizer` of a bpe (its trained JSON) or json spec; None for bytes."""
    if spec.kind == "json":
        from tokenizers import Tokenizer

        assert spec.path is not None  # every json spec names its file
        return Tokenizer.from_file(spec.path)
    if spec.kind != "bpe":
        return None
    assert bpe_json is not None, "a bpe spec loads from its trained JSON"
    return load_bpe(bpe_json)


def train_bpe(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer; returns a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_bpe(json_text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json_text)


def encode_documents(docs: list[str], spec: TokenizerSpec, bpe=None) -> np.ndarray:
    """Token ids of the documents, each followed by the separator, as one 1-D array.
    (Its output is cached: a change to it, or to train_bpe, bumps scaling.data.CACHE_FORMAT.)"""
    if spec.kind == "bytes":
        sep = "\0"
        data = sep.join(docs).encode("utf-8") + sep.encode() if docs else b""
        return np.frombuffer(data, dtype=np.uint8).astype(spec.dtype)
    if not docs:
        return np.zeros(0, spec.dtype)
    encodings = bpe.encode_batch(docs, add_special_tokens=False)
    lengths = np.array([len(e.ids) + 1 for e in encodings])
    out = np.full(int(lengths.sum()), spec.separator, spec.dtype)
    ends = np.cumsum(lengths)
    for enc, end, n in zip(encodings, ends, lengths, strict=True):
        out[end - n:end - 1] = enc.ids
    return out


def decode(ids: np.ndarray, spec: TokenizerSpec, bpe=None) -> str:
    if spec.kind == "bytes":
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")
    return bpe.decode(np.asarray(ids).tolist(), skip_special_tokens=False)
