"""Importing the library's Slurm launcher (and so submitit) leaves the process's logging as
it was: submitit's import-time dictConfig used to close and remove every existing handler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import io, logging, os
stream = io.StringIO()
handler = logging.StreamHandler(stream)
logging.getLogger().addHandler(handler)
import sweeps.sweep  # imports sweeps.launch.slurm, which imports submitit
import submitit
assert logging.getLogger().handlers == [handler], logging.getLogger().handlers
assert not stream.closed
logging.getLogger("user").warning("still logged")
assert "still logged" in stream.getvalue()
assert not logging.getLogger("submitit").handlers
expect = os.environ.get("EXPECT_LEVEL")
assert os.environ.get("SUBMITIT_LOG_LEVEL") == expect  # the environment as it was
if expect:
    assert logging.getLogger("submitit").level == logging.getLevelName(expect.upper())
"""


def _check(**env: str) -> None:
    import os

    run_env = {k: v for k, v in os.environ.items() if k != "SUBMITIT_LOG_LEVEL"}
    run_env.update(env, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", CHECK], env=run_env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_importing_sweeps_keeps_existing_log_handlers():
    _check()


def test_a_level_the_user_set_is_kept_and_applied():
    _check(SUBMITIT_LOG_LEVEL="error", EXPECT_LEVEL="error")
