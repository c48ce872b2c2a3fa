"""`scaling demo` end to end at tiny scale: sweep, fit with bootstrap, report, headline;
and a second invocation resumes (trains nothing) and prints the same headline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TINY_SPEC = """
name = "tinydemo"
[data]
source = "synthetic"
seq_len = 32
eval_tokens = 2048
[budgets]
values = [1e10, 4e10]
[grid]
sizes = 5
span = 16.0
tokens_per_param = 40.0
[optim]
recipe = "tiny-bytes"
[train]
log_every = 25
[checks]
min_steps = 20
[launcher]
workers = 2
"""


def _demo(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaling_cli", "demo", "--spec", "tiny.toml", "--runs-dir", "runs",
         "--bootstrap", "30"], cwd=tmp_path, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    for needle in ("Approach 1", "Approach 2", "Approach 3", "non-embedding N",
                   "recommendation for 4e+11 FLOPs", "parameters N*", "predicted loss",
                   "report: runs/tinydemo/report/report.html"):
        assert needle in out, needle
    sweep = tmp_path / "runs" / "tinydemo"
    assert (sweep / "fit.json").is_file() and (sweep / "fit_non_embedding.json").is_file()
    assert (sweep / "report" / "report.html").is_file()
    assert len(list((sweep / "report" / "figures").glob("*.png"))) >= 4
    results = sorted(sweep.glob("*/result.json"))
    assert len(results) >= 8
    stamps = {p: p.stat().st_mtime_ns for p in results}

    again = _demo(tmp_path)  # nothing left to train: finished runs are skipped
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    headline = out[out.index("recommendation for"):]
    assert headline == again.stdout[again.stdout.index("recommendation for"):]
