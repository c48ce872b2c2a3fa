"""The shipped multiple-choice task: which of four lines really follows a stretch of code.

`build_next_line_task()` draws items from the *validation* split of the "stdlib" corpus
(scaling.corpus: files chosen by a hash of their path, so training on "stdlib" never sees
them, whatever the Python version). An item's context is up to `CONTEXT_LINES` lines of a
validation file (at most `MAX_CONTEXT_CHARS` characters, whole lines) followed by the
indentation of the line that comes next; its choices are that line's content and the
contents of three lines drawn from other validation files (indentation stripped, newline
kept), in a random order. So the choices differ in what they say, not in how they are
indented (cheap spaces would otherwise win the per-token comparison of scaling.tasks).

Which lines: answers and distractors are ASCII, 8 to 60 characters with indentation, not
blank, not a comment, and unique across the validation split (a distractor is never also
a right answer). An answer uses a name (4+ characters) that its context uses, and no
distractor uses any name of the context: the context is what tells them apart, which even
a 100K-parameter byte model picks up after a few hundred steps (tests/scaling/test_evals.py),
while guessing stays at 0.25. An answer is skipped when it and the line before it also stand
together anywhere in the training split (copied code would make the item a memory test).
Everything is a pure function of the corpus and `seed`.

`python -m scaling.stdlib_task [--out PATH] [--items N] [--seed S]` writes the file; the
committed `data/tasks/stdlib_next_line.jsonl` is its output (provenance in
data/tasks/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from scaling import corpus as corpus_lib
from scaling.tasks import TaskItem, write_task

TASK_FILE = Path(__file__).resolve().parents[1] / "data" / "tasks" / "stdlib_next_line.jsonl"
CONTEXT_LINES = 8
MAX_CONTEXT_CHARS = 320
MIN_LINE_CHARS, MAX_LINE_CHARS = 8, 60
N_CHOICES = 4
DEFAULT_ITEMS = 400
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")  # names of 4+ characters


def _eligible(line: str) -> bool:
    stripped = line.strip()
    return (MIN_LINE_CHARS <= len(line) <= MAX_LINE_CHARS and line.isascii()
            and line.isprintable() and bool(stripped) and not stripped.startswith("#"))


def _names(text: str) -> set[str]:
    return set(IDENTIFIER.findall(text))


def _pair_key(previous: str, line: str) -> bytes:
    return hashlib.blake2b(f"{previous}\n{line}".encode(), digest_size=12).digest()


def _training_pairs(train: list[corpus_lib.Unit]) -> set[bytes]:
    pairs: set[bytes] = set()
    for unit in train:
        lines = unit.text.splitlines()
        pairs.update(_pair_key(a, b) for a, b in zip(lines, lines[1:], strict=False))
    return pairs


def build_next_line_task(corpus: corpus_lib.Corpus | None = None, *, n_items: int = DEFAULT_ITEMS,
                         seed: int = 0) -> list[TaskItem]:
    """The task's items (module docstring); `corpus` defaults to the stdlib."""
    corpus = corpus_lib.read_stdlib() if corpus is None else corpus
    files = [u.text.splitlines() for u in corpus.valid]
    counts = Counter(line.strip() for lines in files for line in lines)
    unique = {s for s, n in counts.items() if n == 1}
    pool = [(f, i) for f, lines in enumerate(files) for i, line in enumerate(lines)
            if _eligible(line) and line.strip() in unique]
    seen_in_training = _training_pairs(corpus.train)
    answers = [(f, i) for f, i in pool if i >= CONTEXT_LINES
               and _pair_key(files[f][i - 1], files[f][i]) not in seen_in_training]
    if len({f for f, _ in pool}) < 2:
        raise ValueError("the validation split needs lines from at least two files")
    rng = np.random.Generator(np.random.Philox(key=seed))
    items: list[TaskItem] = []
    for k in rng.permutation(len(answers)):
        if len(items) == n_items:
            break
        f, i = answers[int(k)]
        context_lines = files[f][i - CONTEXT_LINES:i]
        while sum(len(x) + 1 for x in context_lines) > MAX_CONTEXT_CHARS and len(context_lines) > 1:
            context_lines = context_lines[1:]
        names = _names("\n".join(context_lines))
        if not names & _names(files[f][i]):
            continue
        distractors: list[str] = []
        while len(distractors) < N_CHOICES - 1:
            g, j = pool[int(rng.integers(len(pool)))]
            line = files[g][j]
            if g != f and line not in distractors and not names & _names(line):
                distractors.append(line)
        answer = int(rng.integers(N_CHOICES))
        true_line = files[f][i]
        choices = distractors[:answer] + [true_line] + distractors[answer:]
        indent = true_line[:len(true_line) - len(true_line.lstrip())]
        items.append(TaskItem("".join(x + "\n" for x in context_lines) + indent,
                              tuple(c.lstrip() + "\n" for c in choices), answer))
    if len(items) < n_items:
        raise ValueError(f"the validation split yields {len(items)} items, fewer than {n_items}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling.stdlib_task",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TASK_FILE)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = corpus_lib.read_stdlib()
    items = build_next_line_task(corpus, n_items=args.items, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_task(args.out, items)
    print(f"{args.out}: {len(items)} items from {len(corpus.valid)} validation files of "
          f"{corpus.description}, corpus hash {corpus.corpus_hash[:16]}, seed {args.seed}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
