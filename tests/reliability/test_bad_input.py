"""Every case of the bad-input catalogue (catalogue.py) exits 2 with one clear line and
changes nothing that was already in the runs directory."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from catalogue import CASES, _prepare, run_all  # noqa: E402
from reliability_helpers import REPO, run_cli  # noqa: E402

COMMANDS = ("plan", "sweep", "train", "status", "fit", "recommend", "report")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("catalogue")


@pytest.fixture(scope="module")
def results(root):
    # All cases run up front, three at a time, each in a process forked from cli_server.py
    # (which has imported JAX, pandas and matplotlib once).
    return run_all(root)


def test_catalogue_covers_every_command():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    for command in COMMANDS:
        assert any(c.args[0] == command for c in CASES), command


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, results):
    r = results[case.id]
    stderr = r["stderr"]
    assert "Traceback" not in stderr, stderr
    assert r["rc"] == 2, f"exit {r['rc']}, stderr: {stderr[-2000:]}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got {stderr!r}"
    assert re.match(r"scaling( \w+)?: error: ", lines[0]), lines[0]
    for text in case.expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert r["changes"] == [], r["changes"]


SPOT_CHECKS = (
    "cli-unknown-command",
    "plan-budget-not-number",
    "spec-unknown-key",
    "csv-no-loss",
    "train-config-no-model",
    "runs-missing",
    "fit-json-corrupt",
    "report-budget-negative",
)


@pytest.mark.parametrize("case_id", SPOT_CHECKS)
def test_real_entry_point_prints_the_same(case_id, results, root):
    """`python -m scaling_cli` in a fresh interpreter says exactly what the forked child said
    (nothing printed at import time, the same exit code)."""
    case = next(c for c in CASES if c.id == case_id)
    work = root / f"real-{case_id}"
    _prepare(case, root / "base", work)
    r = run_cli(list(case.args), cwd=work)
    assert (r.returncode, r.stderr) == (results[case_id]["rc"], results[case_id]["stderr"])


def test_reliability_md_lists_every_case():
    """RELIABILITY.md's table is generated from the catalogue; regenerate it when a case changes."""
    text = (REPO / "RELIABILITY.md").read_text()
    for case in CASES:
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{case.id}` |")), None)
        assert row is not None, f"RELIABILITY.md: no row for {case.id}"
        assert "`scaling " + " ".join(case.args) + "`" in row and case.what in row, row
        for expected in case.expect:
            assert expected.replace("|", "\\|") in row, (case.id, expected)
