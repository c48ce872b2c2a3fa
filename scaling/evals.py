"""Metrics beyond the held-out loss: named held-out sets (`data.eval_sets`) and
multiple-choice tasks (`data.tasks`, scaling.tasks), measured at every eval and at the end.

Keys (flat, in metrics.jsonl eval lines and in result.json; docs/architecture.md):
`eval/<name>/loss` (nats/token), `eval/<name>/bpb` (bits per UTF-8 byte),
`task/<name>/loss`, `task/<name>/accuracy`, `task/<name>/chance` (scaling.tasks).
result.json also gets `eval_sets` ({name: {source, split, n_tokens, bytes_per_token}}) and
`tasks` ({name: {path, sha256, n_items, accuracy_rule}}).

An eval set's source is any `data.source` scheme (scaling.sources: "stdlib", "text:PATH",
"parquet:PATH", "hf:NAME[:CONFIG][:SPLIT]", "hf-disk:PATH", "tokens:PATH",
"synthetic[:...]"); a Parquet file or dataset holds its text in the run's
`data.text_column`. Text is tokenized with the run's own tokenizer; `tokens:` files are
already ids and must be ids of that tokenizer (they are checked against the model's
vocabulary, which is also what sizes a `.bin` file's ids). What is scored: the source's
validation split when it is the training corpus (same corpus hash) or a synthetic chain
(its validation stream is drawn apart from its training stream); otherwise the whole
corpus, which the run never trained on (a corpus that overlaps the training one without
being it is the user's to avoid). The first `data.eval_tokens` target tokens are scored in
the fixed windows of `scaling.data.eval_batches`; bits per byte divide by the UTF-8 bytes
per token of the tokenized documents (1 for synthetic and tokens:, as for the main eval).
Documents are read only as far as those tokens need, so a large corpus costs little.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling import corpus as corpus_lib
from scaling import data as data_lib
from scaling import sources as sources_lib
from scaling import tokenizer as tokenizer_lib
from scaling.config import DataConfig
from scaling.errors import UserError
from scaling.tasks import ACCURACY_RULE, Task, TaskRows, read_task, task_metrics, task_rows

METRIC_PREFIXES = ("eval/", "task/")


@dataclass(frozen=True)
class EvalSet:
    name: str
    source: str
    split: str  # "validation" | "all"
    batches: tuple[np.ndarray, ...]  # int32 windows, as scaling.data.eval_batches
    n_tokens: int  # target tokens scored
    bytes_per_token: float

    def describe(self) -> dict:
        return {"source": self.source, "split": self.split, "n_tokens": self.n_tokens,
                "bytes_per_token": self.bytes_per_token}


def _renamed(e: UserError, where: str) -> UserError:
    """corpus and source errors name `data.source`; an eval set's name its own field."""
    text = str(e)
    if text.startswith("data.source"):
        return UserError(re.sub(r"^data\.source", where, text))
    return UserError(f"{where}: {text}")


def check_eval_source(name: str, source: str, text_column: str = "text") -> None:
    """Cheap checks of an eval set's source (scheme, options, the path exists, a Parquet
    file's text column from its footer), for spec loading. A tokens: source's ids are
    checked when a run loads it (against the model's vocabulary)."""
    where = f"data.eval_sets.{name}"
    try:
        kind = sources_lib.scheme(source)
        if kind == "synthetic" and source != "synthetic":
            corpus_lib.parse_synthetic(source)
        elif kind == "tokens":
            raw = source.partition(":")[2]
            if not Path(raw).expanduser().exists():
                raise UserError(f"data.source: {raw}: no such file or directory")
        elif kind != "synthetic":
            sources_lib.validate(source, text_column=text_column)
    except UserError as e:
        raise _renamed(e, where) from None


def check_data_inputs(data_cfg: DataConfig) -> None:
    """Every eval set's source and every task file, before anything is written."""
    ids_only = sources_lib.scheme(data_cfg.source) == "tokens"
    for name, source in data_cfg.eval_sets:
        check_eval_source(name, source, data_cfg.text_column)
        if ids_only and sources_lib.scheme(source) not in ("tokens", "synthetic"):
            # a tokens: run has no tokenizer to turn text into its ids
            raise UserError(f"data.eval_sets.{name}: a text source ({source!r}) needs the "
                            "run's tokenizer, and a tokens: training source has none; give "
                            "a tokens:PATH eval set of the same tokenizer's ids")
    for name, path in data_cfg.tasks:
        read_task(name, path)


def make_encoder(tokenizer: str, corpus_hash: str, cache_dir=None) -> Callable[[str], list[int]]:
    """text -> token ids with the run's tokenizer (a BPE one is the training corpus's)."""
    spec = tokenizer_lib.parse_tokenizer(tokenizer)
    if spec.kind == "bytes":
        return lambda text: list(text.encode("utf-8"))
    path = data_lib.bpe_tokenizer_path(corpus_hash, tokenizer, cache_dir)
    bpe = tokenizer_lib.load_bpe(path.read_text(encoding="utf-8"))
    return lambda text: bpe.encode(text, add_special_tokens=False).ids


def _check_vocab(ids: np.ndarray, vocab_size: int, where: str) -> None:
    if ids.size and int(ids.max()) >= vocab_size:
        raise UserError(f"{where}: token id {int(ids.max())} is outside the model's "
                        f"vocabulary (model.vocab_size {vocab_size}); use a source the "
                        "run's tokenizer covers")


def load_eval_set(name: str, source: str, token_data: data_lib.TokenData, *,
                  encode: Callable[[str], list[int]], seq_len: int, eval_tokens: int,
                  batch_size: int, vocab_size: int, cache_dir=None,
                  text_column: str = "text") -> EvalSet:
    where = f"data.eval_sets.{name}"
    check_eval_source(name, source, text_column)
    try:
        stream, split, bytes_per_token = _eval_stream(
            source, token_data, encode=encode, seq_len=seq_len, eval_tokens=eval_tokens,
            vocab_size=vocab_size, cache_dir=cache_dir, text_column=text_column)
    except UserError as e:
        raise _renamed(e, where) from None
    if stream.shape[0] < seq_len + 1:
        raise UserError(f"{where}: {source!r} has {stream.shape[0]} tokens, fewer than "
                        f"model.seq_len + 1 = {seq_len + 1}")
    _check_vocab(np.asarray(stream), vocab_size, where)
    batches = data_lib.eval_batches(stream, eval_tokens=eval_tokens, batch_size=batch_size,
                                    seq_len=seq_len)
    n_tokens = sum(b.shape[0] for b in batches) * seq_len
    return EvalSet(name, source, split, tuple(batches), n_tokens, bytes_per_token)


def _eval_stream(source: str, token_data: data_lib.TokenData, *,
                 encode: Callable[[str], list[int]], seq_len: int, eval_tokens: int,
                 vocab_size: int, cache_dir, text_column: str) -> tuple[np.ndarray, str, float]:
    """(token ids to score, split, UTF-8 bytes per token) of one eval set's source."""
    kind = sources_lib.scheme(source)
    need = eval_tokens + 1
    if kind == "synthetic":
        cfg = DataConfig(source=source, eval_tokens=eval_tokens)
        return data_lib.load_tokens(cfg, seq_len=seq_len, cache_dir=cache_dir).valid, \
            "validation", 1.0
    cache = data_lib.cache_path(cache_dir)
    if kind == "tokens":
        files = sources_lib.token_files(source.partition(":")[2], vocab_size, cache)
        if sources_lib.token_files_hash(files, vocab_size, cache) == token_data.corpus_hash:
            return np.asarray(token_data.valid[:need]), "validation", 1.0
        parts, n = [], 0
        for f in files:
            parts.append(np.asarray(f.ids[:need - n], np.int64))
            n += parts[-1].shape[0]
            if n >= need:
                break
        return np.concatenate(parts), "all", 1.0
    docs = sources_lib.open_source(source, text_column, cache)
    same = docs.corpus_hash == token_data.corpus_hash
    texts: Iterable[str]
    if same:
        valid = np.flatnonzero(docs.is_valid)
        start = int(valid[0]) if valid.size else docs.n_docs
        texts = (t for i, t in enumerate(docs.read(start), start) if docs.is_valid[i])
    else:
        texts = docs.read(0)
    stream, bytes_per_token = _encode_until(texts, encode, need)
    return stream, "validation" if same else "all", bytes_per_token


def _encode_until(docs: Iterable[str], encode: Callable[[str], list[int]],
                  n_tokens: int) -> tuple[np.ndarray, float]:
    """Documents joined by the separator (0), encoded only as far as n_tokens; and UTF-8
    bytes (a separator counts 1) per token of what was encoded."""
    ids: list[int] = []
    n_bytes = 0
    for doc in docs:
        ids.extend(encode(doc))
        ids.append(0)
        n_bytes += len(doc.encode("utf-8")) + 1
        if len(ids) >= n_tokens:
            break
    return np.asarray(ids, np.int64), n_bytes / max(len(ids), 1)


@dataclass(frozen=True)
class LoadedTask:
    task: Task
    rows: TaskRows

    def describe(self) -> dict:
        return {"path": self.task.path, "sha256": self.task.sha256,
                "n_items": len(self.task.items), "accuracy_rule": ACCURACY_RULE}


class ExtraEvals:
    """The eval sets and tasks of one run, loaded once, measured at every eval."""

    def __init__(self, eval_sets: list[EvalSet], tasks: list[LoadedTask]) -> None:
        self.eval_sets, self.tasks = eval_sets, tasks

    @classmethod
    def load(cls, data_cfg: DataConfig, token_data: data_lib.TokenData, *, seq_len: int,
             batch_size: int, vocab_size: int, cache_dir=None) -> ExtraEvals:
        """Read and check everything (UserError naming the field, file and line)."""
        check_data_inputs(data_cfg)  # every cheap check before any slow one
        if not data_cfg.eval_sets and not data_cfg.tasks:
            return cls([], [])
        encode = make_encoder(data_cfg.tokenizer, token_data.corpus_hash, cache_dir)
        eval_sets = [load_eval_set(name, source, token_data, encode=encode, seq_len=seq_len,
                                   eval_tokens=data_cfg.eval_tokens, batch_size=batch_size,
                                   vocab_size=vocab_size, cache_dir=cache_dir,
                                   text_column=data_cfg.text_column)
                     for name, source in data_cfg.eval_sets]
        tasks = []
        for name, path in data_cfg.tasks:
            task = read_task(name, path)
            rows = task_rows(task, encode, seq_len)
            _check_vocab(rows.tokens_RxL1, vocab_size, f"data.tasks.{name}")
            tasks.append(LoadedTask(task, rows))
        return cls(eval_sets, tasks)

    def __bool__(self) -> bool:
        return bool(self.eval_sets or self.tasks)

    def evaluate(self, mean_loss: Callable[[list[np.ndarray]], float],
                 score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict[str, float]:
        """The flat metrics (module docstring) of one model, given its mean nats/token over
        eval batches (`scaling.train_step.evaluate`) and its summed masked nats per row
        (`scaling.train_step.score_rows`); callables keep this module free of JAX."""
        out: dict[str, float] = {}
        for s in self.eval_sets:
            loss = mean_loss(list(s.batches))
            out[f"eval/{s.name}/loss"] = loss
            out[f"eval/{s.name}/bpb"] = loss / math.log(2) / s.bytes_per_token
        for t in self.tasks:
            nats_R = score(t.rows.tokens_RxL1, t.rows.mask_RxL)
            metrics = task_metrics(nats_R, t.rows.mask_RxL.sum(axis=1), t.rows)
            out.update({f"task/{t.task.name}/{k}": v for k, v in metrics.items()})
        return out

    def describe(self) -> dict:
        """What result.json records about the sets and tasks (besides their metrics)."""
        out: dict = {}
        if self.eval_sets:
            out["eval_sets"] = {s.name: s.describe() for s in self.eval_sets}
        if self.tasks:
            out["tasks"] = {t.task.name: t.describe() for t in self.tasks}
        return out


def extra_metrics(record: dict) -> dict[str, float]:
    """The eval-set and task metrics of a result.json or metrics.jsonl record."""
    return {k: float(v) for k, v in record.items()
            if k.startswith(METRIC_PREFIXES) and isinstance(v, int | float)
            and not isinstance(v, bool)}
