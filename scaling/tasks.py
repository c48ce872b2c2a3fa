"""Multiple-choice task files (`data.tasks`): reading, rows to score, and the metrics.

A task file is JSONL, one object per line: `context` (a string), `choices` (a list of at
least two strings) and `answer` (the index of the correct choice). Blank lines are skipped;
anything else wrong is a one-line UserError naming the file and line.

Scoring. Each (item, choice) pair becomes one row of `seq_len + 1` tokens: the context's
tokens then the choice's (each encoded on its own, so a BPE merge never straddles the
boundary), right-padded, with a mask over the positions that predict the choice's tokens.
The context is cut from the left to fit; a choice longer than `seq_len` tokens is scored
on its first `seq_len` (at least one context token always remains). All rows of
all tasks share one shape, so one jitted scoring function serves them all
(`scaling.train_step.make_score_fn`).

Metrics of a task (`task_metrics`):
- `loss`: the correct choice's mean nats per token given the context, averaged over items
  (each item weighs the same).
- `accuracy`: the share of items whose correct choice has the lowest mean nats per token
  among its choices (ties go to the first). Per token, not total: a total favours short
  choices whatever they say. `ACCURACY_RULE` names this rule in result.json.
- `chance`: the mean over items of 1 / number of choices (what guessing scores).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.errors import UserError

ACCURACY_RULE = "lowest mean nats per choice token"


@dataclass(frozen=True)
class TaskItem:
    context: str
    choices: tuple[str, ...]
    answer: int

    def to_dict(self) -> dict:
        return {"context": self.context, "choices": list(self.choices), "answer": self.answer}


@dataclass(frozen=True)
class Task:
    name: str
    path: str
    items: tuple[TaskItem, ...]
    sha256: str  # of the file's bytes, recorded in result.json

    @property
    def chance(self) -> float:
        return float(np.mean([1.0 / len(item.choices) for item in self.items]))


@dataclass(frozen=True)
class TaskRows:
    """Every (item, choice) of one task as fixed-length rows (R rows, L = seq_len)."""

    tokens_RxL1: np.ndarray  # int32, padded with 0
    mask_RxL: np.ndarray  # float32: 1 where position t predicts a choice token (token t+1)
    item_R: np.ndarray  # int: which item a row belongs to
    choice_R: np.ndarray  # int: which choice of its item
    answer_I: np.ndarray  # int: each item's correct choice

    @property
    def n_rows(self) -> int:
        return int(self.tokens_RxL1.shape[0])


def _line_error(path: str, line_no: int, what: str) -> UserError:
    return UserError(f"{path}:{line_no}: {what}")


def parse_item(record: object, path: str, line_no: int) -> TaskItem:
    """One task line as a TaskItem; UserError naming file and line for anything malformed."""
    if not isinstance(record, dict):
        raise _line_error(path, line_no, "expected a JSON object with context, choices, answer")
    for key in ("context", "choices", "answer"):
        if key not in record:
            raise _line_error(path, line_no, f"missing {key!r} (expected context, choices, answer)")
    unknown = sorted(set(record) - {"context", "choices", "answer"})
    if unknown:
        raise _line_error(path, line_no, f"unknown key {unknown[0]!r} (expected context, "
                                         "choices, answer)")
    context, choices, answer = record["context"], record["choices"], record["answer"]
    if not isinstance(context, str):
        raise _line_error(path, line_no, "'context' must be a string")
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c for c in choices)):
        raise _line_error(path, line_no, "'choices' must be a list of at least 2 non-empty strings")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise _line_error(path, line_no, f"'answer' must be an integer index, got {answer!r}")
    if not 0 <= answer < len(choices):
        raise _line_error(path, line_no, f"'answer' {answer} is out of range for "
                                         f"{len(choices)} choices (expected 0..{len(choices) - 1})")
    return TaskItem(context, tuple(choices), answer)


def read_task(name: str, path: str | Path) -> Task:
    """Read and validate a task file (`data.tasks.<name>`)."""
    where = str(path)
    try:
        raw = Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise UserError(f"data.tasks.{name}: {where}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"data.tasks.{name}: {where}: expected a JSONL file, got a directory") from None
    except PermissionError:
        raise UserError(f"data.tasks.{name}: {where}: cannot read (permission denied)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"data.tasks.{name}: {where}: not UTF-8 text") from None
    items = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _line_error(where, line_no, f"invalid JSON ({e.msg})") from None
        items.append(parse_item(record, where, line_no))
    if not items:
        raise UserError(f"data.tasks.{name}: {where}: no items")
    return Task(name, where, tuple(items), hashlib.sha256(raw).hexdigest())


def write_task(path: str | Path, items: list[TaskItem]) -> None:
    """Write items as a task file (atomically; one compact JSON object per line)."""
    from scaling.fileio import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(i.to_dict(), ensure_ascii=False) + "\n"
                                    for i in items))


def task_rows(task: Task, encode: Callable[[str], list[int]], seq_len: int) -> TaskRows:
    """The rows to score (see module docstring); `encode` maps text to token ids."""
    if seq_len < 2:
        raise UserError(f"model.seq_len: task {task.name!r} needs seq_len >= 2, got {seq_len}")
    n_rows = sum(len(item.choices) for item in task.items)
    tokens_RxL1 = np.zeros((n_rows, seq_len + 1), np.int32)
    mask_RxL = np.zeros((n_rows, seq_len), np.float32)
    item_R = np.zeros(n_rows, np.int64)
    choice_R = np.zeros(n_rows, np.int64)
    r = 0
    for i, item in enumerate(task.items):
        context = encode(item.context)
        for j, choice in enumerate(item.choices):
            answer_ids = encode(choice)[:seq_len]
            if not answer_ids:
                raise UserError(f"{task.path}: item {i + 1} choice {j}: encodes to no tokens")
            # A row holds seq_len + 1 tokens; keep the context's tail (at least one token,
            # a document separator when the context is empty, as at a document's start).
            keep = seq_len + 1 - len(answer_ids)
            row = (context[-keep:] if context else [0]) + answer_ids
            tokens_RxL1[r, :len(row)] = row
            first = len(row) - len(answer_ids)  # index of the first choice token
            mask_RxL[r, first - 1:len(row) - 1] = 1.0
            item_R[r], choice_R[r] = i, j
            r += 1
    answer_I = np.array([item.answer for item in task.items], np.int64)
    return TaskRows(tokens_RxL1, mask_RxL, item_R, choice_R, answer_I)


def task_metrics(nats_R: np.ndarray, count_R: np.ndarray, rows: TaskRows) -> dict[str, float]:
    """loss, accuracy and chance of one task from each row's summed nats and token count."""
    per_token_R = np.asarray(nats_R, np.float64) / np.maximum(np.asarray(count_R, np.float64), 1)
    n_items = rows.answer_I.shape[0]
    n_choices_I = np.bincount(rows.item_R, minlength=n_items)
    # Rows are item-major, choice-minor (task_rows), so each item is one contiguous slice.
    starts_I = np.concatenate([[0], np.cumsum(n_choices_I)[:-1]])
    correct_loss_I = per_token_R[starts_I + rows.answer_I]
    best_I = np.array([int(np.argmin(per_token_R[s:s + n]))
                       for s, n in zip(starts_I, n_choices_I, strict=True)])
    return {"loss": float(correct_loss_I.mean()),
            "accuracy": float(np.mean(best_I == rows.answer_I)),
            "chance": float(np.mean(1.0 / n_choices_I))}
