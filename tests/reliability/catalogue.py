"""The bad-input catalogue: every case is one `scaling` command line on bad input.

Each case runs in a fresh copy of a work directory holding `runs/` (a finished fake study
`runs/fake/`, claimed by a spec with hash 0...0, plus a diverged and a failed run), a CSV of
the same study (`study.csv`) and its saved fit (`study.fit.json`); `files` adds the case's
own bad inputs. The expectation (tests/reliability/test_bad_input.py): exit code 2, stderr
exactly one non-empty line containing every string of `expect` (the field or file it names
and what was expected), no traceback, and every file already under `runs/` byte-identical.

RELIABILITY.md's bad-input table is generated from this list
(`python tests/reliability/catalogue.py`) and a test keeps the two in sync.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import study_configs  # noqa: E402

# A valid tiny spec; cases derive bad ones from it.
SPEC = """\
name = "tiny"
convention = "6N"

[data]
source = "synthetic:tokens=20000,vocab=32,seed=1"
seq_len = 16
eval_tokens = 256

[budgets]
values = [1e9]

[grid]
sizes = 3
span = 4.0

[checks]
min_sizes = 3
min_steps = 1
"""


def spec(*replace: tuple[str, str], append: str = "") -> str:
    text = SPEC
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    return text + append


GOOD_CONFIG = {  # a RunConfig.to_dict() of a tiny run (the keys the trainer reads)
    "model": {
        "vocab_size": 32,
        "seq_len": 16,
        "n_layers": 1,
        "d_model": 8,
        "n_heads": 1,
        "head_dim": 8,
        "d_ff": 32,
        "mlp": "swiglu",
        "tie_embeddings": True,
        "qk_norm": False,
    },
    "data": {
        "source": "synthetic:tokens=20000,vocab=32,seed=1",
        "tokenizer": "bytes",
        "eval_tokens": 256,
        "max_epochs": None,
    },
    "batch_size": 4,
    "n_steps": 3,
    "seed": 0,
    "sweep": "bad",
    "log_every": 1,
}


def config(**changes) -> str:
    d = json.loads(json.dumps(GOOD_CONFIG))
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            d[section][sub] = value
        elif value is None:
            d.pop(section)
        else:
            d[section] = value
    return json.dumps(d)


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # substrings of the one stderr line
    what: str  # the bad input, in words (RELIABILITY.md)
    files: dict[str, str | bytes] = field(default_factory=dict)


def parquet_bytes(**columns: list) -> bytes:
    """A small Parquet file's bytes (pyarrow), for cases that need one on disk."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


TASK_LINE = '{"context": "a", "choices": ["b", "c"], "answer": 0}\n'  # a good task item

# 300 ids 0..299 as nanoGPT writes them (raw uint16): too many for a declared vocabulary of 32
TOKEN_IDS_300 = b"".join(i.to_bytes(2, "little") for i in range(300))

CSV_HEAD = "params,tokens,loss\n"
FIRST_RUN = f"runs/fake/{study_configs(sweep='fake')[0].run_name()}"  # a run of the base study

CASES = [
    # ----------------------------------------------------------------- CLI flags
    Case(
        "cli-unknown-command",
        ("frobnicate",),
        ("invalid choice", "frobnicate"),
        "an unknown subcommand",
    ),
    Case(
        "plan-budget-not-number",
        ("plan", "--budget", "lots"),
        ("--budget", "expected", "lots"),
        "`--budget` that is not a number",
    ),
    Case(
        "plan-budget-negative",
        ("plan", "--budget=-1e18"),
        ("--budget", "positive"),
        "a negative `--budget`",
    ),
    Case(
        "plan-budget-inf",
        ("plan", "--budget", "inf"),
        ("--budget", "expected"),
        "an infinite `--budget`",
    ),
    Case(
        "plan-no-budget",
        ("plan",),
        ("--budget", "expected at least one"),
        "neither a spec nor `--budget`",
    ),
    Case(
        "plan-sizes-too-few",
        ("plan", "--budget", "1e18", "--sizes", "2"),
        ("--sizes", ">= 3"),
        "fewer than 3 sizes per budget",
    ),
    Case(
        "plan-span-below-one",
        ("plan", "--budget", "1e18", "--span", "0.5"),
        ("--span", "> 1"),
        "a size span below 1",
    ),
    Case(
        "plan-bad-convention",
        ("plan", "--budget", "1e18", "--convention", "7N"),
        ("--convention", "6N", "7N"),
        "an unknown FLOP convention",
    ),
    Case(
        "plan-spec-and-budget",
        ("plan", "spec.toml", "--budget", "1e18"),
        ("--budget", "not both"),
        "a spec and `--budget` together",
        {"spec.toml": SPEC},
    ),
    Case(
        "sweep-workers-zero",
        ("sweep", "spec.toml", "--runs-dir", "runs", "--workers", "0"),
        ("--workers", ">= 1"),
        "`--workers 0`",
        {"spec.toml": SPEC},
    ),
    Case(
        "sweep-bad-launcher",
        ("sweep", "spec.toml", "--launcher", "k8s"),
        ("--launcher", "k8s"),
        "an unknown `--launcher`",
        {"spec.toml": SPEC},
    ),
    Case(
        "sweep-runs-dir-is-file",
        ("sweep", "spec.toml", "--runs-dir", "study.csv"),
        ("--runs-dir", "study.csv"),
        "a file given as `--runs-dir`",
        {"spec.toml": SPEC},
    ),
    Case(
        "train-fsdp-zero",
        ("train", "runs/bad/r", "--fsdp", "0"),
        ("fsdp", "divisor"),
        "`--fsdp 0`",
        {"runs/bad/r/config.json": config()},
    ),
    Case(
        "train-max-steps-zero",
        ("train", "runs/bad/r", "--max-steps", "0"),
        ("--max-steps", "positive"),
        "`--max-steps 0`",
        {"runs/bad/r/config.json": config()},
    ),
    Case(
        "train-keep-steps-text",
        ("train", "runs/bad/r", "--keep-steps", "ten"),
        ("--keep-steps", "step numbers"),
        "`--keep-steps` that are not numbers",
        {"runs/bad/r/config.json": config()},
    ),
    Case(
        "fit-bootstrap-negative",
        ("fit", "study.csv", "--bootstrap", "-3"),
        ("--bootstrap", ">= 0"),
        "a negative bootstrap count",
    ),
    Case(
        "fit-level-above-one",
        ("fit", "study.csv", "--bootstrap", "5", "--level", "1.5"),
        ("level", "(0, 1)"),
        "a confidence level above 1",
    ),
    Case(
        "fit-approach-unknown",
        ("fit", "study.csv", "--approach", "4"),
        ("--approach", "'4'"),
        "an approach other than 1, 2, 3, all",
    ),
    Case(
        "fit-convention-unknown",
        ("fit", "runs", "--convention", "7N"),
        ("convention", "'7N'"),
        "a FLOP convention the runs do not record",
    ),
    Case(
        "fit-drop-all",
        ("fit", "study.csv", "--drop-highest", "1000"),
        ("drop", "all 21 points"),
        "`--drop-highest` removing every point",
    ),
    Case(
        "fit-metric-unknown",
        ("fit", "study.csv", "--metric", "eval/nope/loss"),
        ("--metric", "'eval/nope/loss'", "not a column", "loss-like metrics: loss"),
        "`--metric` naming a metric the CSV does not have",
    ),
    Case(
        "fit-metric-accuracy",
        ("fit", "runs", "--metric", "task/t/accuracy"),
        ("--metric", "accuracy-like", "scaling predict --task t"),
        "`--metric` naming a saturating metric (accuracy)",
    ),
    Case(
        "predict-task-no-fit",
        ("predict", "--task", "t", "--fit", "study.csv", "--params", "1e9", "--tokens", "2e10"),
        ("no saved fit of task 't'", "scaling fit study.csv --task t"),
        "a task forecast before its task fit",
    ),
    Case(
        "recommend-budget-text",
        ("recommend", "--budget", "big", "--fit", "study.fit.json"),
        ("--budget", "big"),
        "a `--budget` that is not a number",
    ),
    Case(
        "recommend-budget-negative",
        ("recommend", "--budget", "-5", "--fit", "study.fit.json", "--approach", "2"),
        ("budget", "positive"),
        "a negative budget to recommend for",
    ),
    Case(
        "recommend-vocab-zero",
        (
            "recommend",
            "--budget",
            "1e11",
            "--fit",
            "study.fit.json",
            "--approach",
            "2",
            "--vocab-size",
            "0",
        ),
        ("--vocab-size", "positive"),
        "`--vocab-size 0`",
    ),
    Case(
        "report-budget-negative",
        ("report", "study.csv", "--budget", "-1"),
        ("--budget", "positive"),
        "a negative report budget",
    ),
    # ----------------------------------------------------------------- spec TOML
    Case(
        "spec-missing",
        ("sweep", "nope.toml"),
        ("nope.toml", "not found"),
        "a spec path that does not exist",
    ),
    Case(
        "spec-is-directory",
        ("sweep", "runs"),
        ("runs", "directory"),
        "a directory given as the spec",
    ),
    Case(
        "spec-malformed-toml",
        ("sweep", "spec.toml"),
        ("spec.toml", "malformed TOML"),
        "a spec that is not TOML",
        {"spec.toml": 'name = "tiny"\n[budgets\nvalues = [1e9]\n'},
    ),
    Case(
        "spec-not-utf8",
        ("plan", "spec.toml"),
        ("spec.toml", "UTF-8"),
        "a spec that is not UTF-8 text",
        {"spec.toml": b'name = "\xff\xfe"\n'},
    ),
    Case(
        "spec-no-name",
        ("sweep", "spec.toml"),
        ("spec.toml", "name", "missing"),
        "a spec without `name`",
        {"spec.toml": spec(('name = "tiny"\n', ""))},
    ),
    Case(
        "spec-name-traversal",
        ("sweep", "spec.toml", "--runs-dir", "runs"),
        ("spec.toml", "name", "../escape"),
        "a sweep name `../escape` (path traversal)",
        {"spec.toml": spec(('name = "tiny"', 'name = "../escape"'))},
    ),
    Case(
        "spec-name-absolute",
        ("sweep", "spec.toml", "--runs-dir", "runs"),
        ("spec.toml", "name", "/tmp/x"),
        "an absolute sweep name",
        {"spec.toml": spec(('name = "tiny"', 'name = "/tmp/x"'))},
    ),
    Case(
        "spec-unknown-key",
        ("sweep", "spec.toml"),
        ("spec.toml", "grid.sizez", "unknown key"),
        "a misspelt key (`grid.sizez`)",
        {"spec.toml": spec(("sizes = 3", "sizez = 3"))},
    ),
    Case(
        "spec-budgets-empty",
        ("plan", "spec.toml"),
        ("spec.toml", "budgets.values", "at least one"),
        "an empty budget list",
        {"spec.toml": spec(("values = [1e9]", "values = []"))},
    ),
    Case(
        "spec-budget-negative",
        ("sweep", "spec.toml"),
        ("spec.toml", "budgets.values[0]", "> 0"),
        "a negative budget",
        {"spec.toml": spec(("values = [1e9]", "values = [-1e9]"))},
    ),
    Case(
        "spec-budget-string",
        ("sweep", "spec.toml"),
        ("spec.toml", "budgets.values[0]", "number"),
        "a budget given as a string",
        {"spec.toml": spec(("values = [1e9]", 'values = ["1e9"]'))},
    ),
    Case(
        "spec-convention",
        ("sweep", "spec.toml"),
        ("spec.toml", "convention", "6N"),
        "an unknown convention",
        {"spec.toml": spec(('convention = "6N"', 'convention = "8N"'))},
    ),
    Case(
        "spec-data-source",
        ("sweep", "spec.toml"),
        ("spec.toml", "data.source", "ftp://x"),
        "an unsupported data source",
        {
            "spec.toml": spec(
                ('source = "synthetic:tokens=20000,vocab=32,seed=1"', 'source = "ftp://x"')
            )
        },
    ),
    Case(
        "spec-data-path-missing",
        ("sweep", "spec.toml", "--runs-dir", "runs"),
        ("data.source", "no_such_corpus"),
        "a text corpus path that does not exist",
        {
            "spec.toml": spec(
                (
                    'source = "synthetic:tokens=20000,vocab=32,seed=1"',
                    'source = "text:no_such_corpus/"',
                ),
                ("values = [1e9]", "values = [1e11]"),
            )
        },
    ),
    Case(
        "spec-data-parquet-no-column",
        ("sweep", "spec.toml", "--runs-dir", "runs"),
        ("spec.toml", "data.text_column", "'text'", "body"),
        "a Parquet source without the text column",
        {
            "spec.toml": spec(
                (
                    'source = "synthetic:tokens=20000,vocab=32,seed=1"',
                    'source = "parquet:corpus.parquet"',
                ),
                ("values = [1e9]", "values = [1e11]"),
            ),
            "corpus.parquet": parquet_bytes(body=["some text"] * 4),
        },
    ),
    Case(
        "spec-data-token-ids-beyond-vocab",
        ("sweep", "spec.toml", "--runs-dir", "runs"),
        ("spec.toml", "data.vocab_size", "token id", "[0, 32)"),
        "a token file whose ids exceed the declared `data.vocab_size`",
        {
            "spec.toml": spec(
                (
                    'source = "synthetic:tokens=20000,vocab=32,seed=1"',
                    'source = "tokens:ids.bin"\nvocab_size = 32',
                ),
                ("values = [1e9]", "values = [1e11]"),
            ),
            "ids.bin": TOKEN_IDS_300,
        },
    ),
    Case(
        "spec-data-scheme-unknown",
        ("plan", "spec.toml"),
        ("spec.toml", "data.source", "s3:bucket/corpus", "parquet:PATH"),
        "an unknown source scheme",
        {
            "spec.toml": spec(
                ('source = "synthetic:tokens=20000,vocab=32,seed=1"', 'source = "s3:bucket/corpus"')
            )
        },
    ),
    Case(
        "spec-task-no-answer",
        ("plan", "spec.toml"),
        ("task.jsonl:2", "missing 'answer'"),
        "a task file line without `answer`",
        {
            "spec.toml": spec(("eval_tokens = 256", 'eval_tokens = 256\ntasks = { t = "task.jsonl" }')),
            "task.jsonl": TASK_LINE + '{"context": "a", "choices": ["b", "c"]}\n',
        },
    ),
    Case(
        "spec-task-answer-range",
        ("plan", "spec.toml"),
        ("task.jsonl:1", "'answer' 2 is out of range", "0..1"),
        "a task answer index beyond its choices",
        {
            "spec.toml": spec(("eval_tokens = 256", 'eval_tokens = 256\ntasks = { t = "task.jsonl" }')),
            "task.jsonl": '{"context": "a", "choices": ["b", "c"], "answer": 2}\n',
        },
    ),
    Case(
        "spec-eval-set-missing",
        ("plan", "spec.toml"),
        ("data.eval_sets.prose", "no_such.txt", "no such file"),
        "an eval set whose source does not exist",
        {
            "spec.toml": spec(
                ("eval_tokens = 256", 'eval_tokens = 256\neval_sets = { prose = "text:no_such.txt" }')
            )
        },
    ),
    Case(
        "spec-synthetic-option",
        ("plan", "spec.toml"),
        ("data.source", "vocabulary"),
        "an unknown option of the synthetic source",
        {"spec.toml": spec(("vocab=32", "vocabulary=32"))},
    ),
    Case(
        "spec-tokenizer",
        ("sweep", "spec.toml"),
        ("spec.toml", "tokenizer"),
        "an unknown tokenizer",
        {
            "spec.toml": spec(
                ("eval_tokens = 256", 'eval_tokens = 256\ntokenizer = "sentencepiece"')
            )
        },
    ),
    Case(
        "spec-seq-len-type",
        ("sweep", "spec.toml"),
        ("spec.toml", "data.seq_len", "integer"),
        "a sequence length given as a float",
        {"spec.toml": spec(("seq_len = 16", "seq_len = 16.5"))},
    ),
    Case(
        "spec-grid-sizes-type",
        ("sweep", "spec.toml"),
        ("spec.toml", "grid.sizes", "integer"),
        "grid sizes given as a string",
        {"spec.toml": spec(("sizes = 3", 'sizes = "three"'))},
    ),
    Case(
        "spec-launcher-kind",
        ("sweep", "spec.toml"),
        ("spec.toml", "launcher.kind", "local"),
        "an unknown launcher kind",
        {"spec.toml": spec(append='\n[launcher]\nkind = "k8s"\n')},
    ),
    Case(
        "spec-launcher-shell",
        ("sweep", "spec.toml"),
        ("spec.toml", "launcher.partition", "unexpected"),
        "shell syntax in a Slurm option (`debug; rm -rf ~`)",
        {"spec.toml": spec(append='\n[launcher]\nkind = "slurm"\npartition = "debug; rm -rf ~"\n')},
    ),
    Case(
        "spec-launcher-command",
        ("sweep", "spec.toml"),
        ("spec.toml", "launcher.command", "unknown key"),
        "a `launcher.command` key (no spec key runs a command)",
        {"spec.toml": spec(append='\n[launcher]\ncommand = "touch pwned"\n')},
    ),
    Case(
        "spec-other-owner",
        ("sweep", "spec.toml", "--runs-dir", "runs"),
        ("runs/fake", "another spec", "--force"),
        "a runs dir already claimed by another spec",
        {"spec.toml": spec(('name = "tiny"', 'name = "fake"'))},
    ),
    # ----------------------------------------------------------------- CSV input to fit / report
    Case(
        "csv-missing",
        ("fit", "nothing.csv"),
        ("nothing.csv", "no such file"),
        "a CSV that does not exist",
    ),
    Case(
        "csv-empty-file", ("fit", "bad.csv"), ("bad.csv", "CSV"), "an empty file", {"bad.csv": ""}
    ),
    Case(
        "csv-header-only",
        ("fit", "bad.csv"),
        ("bad.csv", "no rows"),
        "a CSV with a header and no rows",
        {"bad.csv": CSV_HEAD},
    ),
    Case(
        "csv-no-loss",
        ("fit", "bad.csv"),
        ("bad.csv", "'loss'"),
        "a CSV without a loss column",
        {"bad.csv": "params,tokens\n1e6,2e7\n"},
    ),
    Case(
        "csv-no-tokens",
        ("fit", "bad.csv"),
        ("bad.csv", "'tokens'", "flops"),
        "a CSV with neither tokens nor flops",
        {"bad.csv": "params,loss\n1e6,3.0\n"},
    ),
    Case(
        "csv-negative-params",
        ("fit", "bad.csv"),
        ("bad.csv", "'params'", "positive", "row 2"),
        "a negative parameter count",
        {"bad.csv": CSV_HEAD + "1e6,2e7,3.0\n-1e6,2e7,3.0\n"},
    ),
    Case(
        "csv-text-loss",
        ("fit", "bad.csv"),
        ("bad.csv", "'loss'", "row 1"),
        "a loss that is text",
        {"bad.csv": CSV_HEAD + "1e6,2e7,low\n"},
    ),
    Case(
        "csv-nan-tokens",
        ("fit", "bad.csv"),
        ("bad.csv", "'tokens'", "finite"),
        "a NaN token count",
        {"bad.csv": CSV_HEAD + "1e6,nan,3.0\n"},
    ),
    Case(
        "csv-binary",
        ("fit", "bad.csv"),
        ("bad.csv", "CSV"),
        "binary garbage instead of a CSV",
        {"bad.csv": bytes(range(256)) * 4},
    ),
    Case(
        "csv-ragged",
        ("fit", "bad.csv"),
        ("bad.csv", "CSV"),
        "rows with more fields than the header",
        {"bad.csv": CSV_HEAD + "1e6,2e7,3.0\n1e6,2e7,3.0,9,9,9\n"},
    ),
    Case(
        "csv-report-bad-column",
        ("report", "bad.csv"),
        ("bad.csv", "'loss'"),
        "`scaling report` on a CSV without loss",
        {"bad.csv": "params,tokens\n1e6,2e7\n"},
    ),
    # ----------------------------------------------------------------- run dirs and config.json
    Case(
        "runs-missing",
        ("status", "no_runs"),
        ("no_runs", "not a directory"),
        "a runs dir that does not exist",
    ),
    Case(
        "runs-is-file",
        ("status", "study.csv"),
        ("study.csv", "not a directory"),
        "a file given as a runs dir",
    ),
    Case(
        "runs-empty-fit",
        ("fit", "empty"),
        ("empty", "no finished runs"),
        "fitting a runs dir with no runs",
        {"empty/.keep": ""},
    ),
    Case(
        "metrics-corrupt-line",
        ("fit", "runs", "--approach", "1"),
        ("metrics.jsonl", "line 2"),
        "a metrics.jsonl with a corrupt line that is not the last (not a crash: damage)",
        {
            f"{FIRST_RUN}/metrics.jsonl": '{"step": 1, "tokens": 64, "train_loss": 5.0}\n{garbage\n'
            '{"step": 3, "tokens": 192, "train_loss": 4.0}\n'
        },
    ),
    Case(
        "train-not-run-dir",
        ("train", "runs/fake"),
        ("runs/fake", "config.json"),
        "training a directory without config.json",
    ),
    Case(
        "train-config-not-json",
        ("train", "runs/bad/r"),
        ("config.json", "not valid JSON"),
        "a config.json that is not JSON",
        {"runs/bad/r/config.json": '{"model": '},
    ),
    Case(
        "train-config-list",
        ("train", "runs/bad/r"),
        ("config.json", "JSON object"),
        "a config.json holding a list",
        {"runs/bad/r/config.json": "[1, 2]"},
    ),
    Case(
        "train-config-no-model",
        ("train", "runs/bad/r"),
        ("config.json", "model", "missing"),
        "a config.json without a model",
        {"runs/bad/r/config.json": config(model=None)},
    ),
    Case(
        "train-config-unknown-key",
        ("train", "runs/bad/r"),
        ("config.json", "model", "d_modle"),
        "a misspelt model key",
        {"runs/bad/r/config.json": config(model__d_modle=8)},
    ),
    Case(
        "train-config-bad-width",
        ("train", "runs/bad/r"),
        ("model.d_model", "positive integer"),
        "a zero width",
        {"runs/bad/r/config.json": config(model__d_model=0)},
    ),
    Case(
        "train-data-path-missing",
        ("train", "runs/bad/r"),
        ("data.source", "no_such_corpus"),
        "a config whose text corpus does not exist",
        {"runs/bad/r/config.json": config(data__source="text:no_such_corpus/")},
    ),
    Case(
        "train-data-parquet-no-column",
        ("train", "runs/bad/r"),
        ("data.text_column", "'text'", "body"),
        "a config whose Parquet source lacks the text column",
        {
            "runs/bad/r/config.json": config(data__source="parquet:corpus.parquet"),
            "corpus.parquet": parquet_bytes(body=["some text"] * 4),
        },
    ),
    Case(
        "train-data-token-ids-beyond-vocab",
        ("train", "runs/bad/r"),
        ("data.vocab_size", "token id", "[0, 32)"),
        "a config whose token file has ids beyond `data.vocab_size`",
        {
            "runs/bad/r/config.json": config(data__source="tokens:ids.bin", data__vocab_size=32),
            "ids.bin": TOKEN_IDS_300,
        },
    ),
    Case(
        "train-data-scheme-unknown",
        ("train", "runs/bad/r"),
        ("data.source", "s3:bucket/corpus"),
        "a config with an unknown source scheme",
        {"runs/bad/r/config.json": config(data__source="s3:bucket/corpus")},
    ),
    Case(
        "train-n-steps-zero",
        ("train", "runs/bad/r"),
        ("n_steps", "positive"),
        "zero training steps",
        {"runs/bad/r/config.json": config(n_steps=0)},
    ),
    # ----------------------------------------------------------------- fit artefacts
    Case(
        "fit-json-missing",
        ("recommend", "--budget", "1e11", "--fit", "gone.json"),
        ("gone.json", "no such file"),
        "a fit.json that does not exist",
    ),
    Case(
        "fit-json-corrupt",
        ("recommend", "--budget", "1e11", "--fit", "bad.json"),
        ("bad.json", "not valid JSON"),
        "a truncated fit.json",
        {"bad.json": '{"approach3": {'},
    ),
    Case(
        "fit-json-list",
        ("recommend", "--budget", "1e11", "--fit", "bad.json"),
        ("bad.json", "JSON object"),
        "a fit.json holding a list",
        {"bad.json": "[]"},
    ),
    Case(
        "fit-json-no-approach",
        ("recommend", "--budget", "1e11", "--fit", "study.fit.json"),
        ("approach3", "scaling fit"),
        "a fit without the requested approach",
    ),
    Case(
        "fit-json-bad-number",
        ("recommend", "--budget", "1e11", "--fit", "bad.json"),
        ("fit.approach3", "A"),
        "a fit.json whose Approach 3 coefficient is text",
        {
            "bad.json": json.dumps(
                {
                    "approach3": {
                        "A": "x",
                        "B": 2.0,
                        "E": 1.0,
                        "alpha": 0.3,
                        "beta": 0.3,
                        "a": 0.5,
                        "b": 0.5,
                        "G": 1.0,
                    }
                }
            )
        },
    ),
    Case(
        "fit-runs-no-saved-fit",
        ("recommend", "--budget", "1e11", "--fit", "runs"),
        ("runs", "no saved fit"),
        "a runs dir with no saved fit",
    ),
    Case(
        "report-fit-corrupt",
        ("report", "study.csv", "--fit", "bad.json"),
        ("bad.json", "JSON"),
        "a report from a corrupt fit.json",
        {"bad.json": "not json"},
    ),
    Case(
        "report-missing-src",
        ("report", "nowhere"),
        ("nowhere", "no such"),
        "a report of a path that does not exist",
    ),
]


# ----------------------------------------------------------------------------- running


def make_base(root: Path) -> Path:
    """The work directory every case starts from (copied per case)."""
    from reliability_helpers import (
        fake_study,
        run_cli,
        study_configs,
        study_csv,
        write_finished_run,
    )

    from sweeps.ownership import claim_sweep_dir

    base = root / "base"
    base.mkdir(parents=True)
    fake_study(base / "runs", sweep="fake")
    claim_sweep_dir(base / "runs", "fake", "0" * 16, {"name": "fake"})
    extra = study_configs(budgets=(1e9,), widths=(20,), seeds=(1, 2), sweep="fake")
    write_finished_run(
        base / "runs",
        extra[0],
        state="diverged",
        step=3,
        reason="non-finite loss (nan) or grad norm at step 3",
    )
    write_finished_run(
        base / "runs", extra[1], state="failed", step=2, reason="trainer killed by signal 9"
    )
    study_csv(base / "study.csv")
    r = run_cli(["fit", "study.csv", "--approach", "2"], cwd=base)
    assert r.returncode == 0, r.stderr
    return base


def _prepare(case: Case, base: Path, work: Path) -> dict:
    from reliability_helpers import snapshot

    shutil.copytree(base, work, symlinks=True)
    for rel, content in case.files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return snapshot(work / "runs")


def run_all(root: Path, cases=None, jobs: int = 3) -> dict[str, dict]:
    """Run every case (each in its own copy of the base directory) through cli_server.py:
    a forked process per case, as separate as `python -m scaling_cli` but without
    re-importing JAX and pandas for each. Returns rc, stderr, stdout and the changes under
    runs/ by case id."""
    from reliability_helpers import changes, cli_env, snapshot

    base = make_base(root)
    cases = CASES if cases is None else cases
    io_dir = root / "_io"
    io_dir.mkdir()
    before = {c.id: _prepare(c, base, root / c.id) for c in cases}
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("cli_server.py")), "--jobs", str(jobs)],
        cwd=root,
        env=cli_env(root),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    requests = "".join(
        json.dumps(
            {
                "id": c.id,
                "argv": list(c.args),
                "cwd": str(root / c.id),
                "stdout": str(io_dir / f"{c.id}.out"),
                "stderr": str(io_dir / f"{c.id}.err"),
            }
        )
        + "\n"
        for c in cases
    )
    replies, _ = server.communicate(requests, timeout=600)
    rcs = {}
    for line in replies.splitlines():
        msg = json.loads(line)
        if "id" in msg:
            rcs[msg["id"]] = msg["rc"]
    out = {}
    for c in cases:
        out[c.id] = {
            "rc": rcs.get(c.id),
            "stderr": (io_dir / f"{c.id}.err").read_text(),
            "stdout": (io_dir / f"{c.id}.out").read_text(),
            "changes": changes(before[c.id], snapshot(root / c.id / "runs")),
        }
    return out


def markdown_table(results: dict[str, dict]) -> str:
    lines = [
        "| case | command | bad input | what the user sees (stderr, exit 2) |",
        "|---|---|---|---|",
    ]
    for c in CASES:
        cmd = "scaling " + " ".join(c.args)
        seen = results[c.id]["stderr"].strip().replace("|", "\\|") if c.id in results else ""
        lines.append(f"| `{c.id}` | `{cmd}` | {c.what} | `{seen}` |")
    return "\n".join(lines) + "\n"


START, END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def update_reliability_md(path: Path, table: str) -> None:
    """Replace the generated table between the markers of RELIABILITY.md."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}{END}{tail}")


if __name__ == "__main__":  # regenerate RELIABILITY.md's bad-input table from a real run
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        table = markdown_table(run_all(Path(tmp)))
    update_reliability_md(Path(__file__).resolve().parents[2] / "RELIABILITY.md", table)
    print(table, end="")
