"""`make gpu-check` (bench/gpu_check.py) on a machine without an accelerator: one line, exit
2, BENCHMARKS.md untouched; its plan runs the 124M/350M throughput and a tiny sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


def test_without_an_accelerator_exits_2_with_one_line():
    before = (REPO / "BENCHMARKS.md").read_bytes()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no accelerator" in proc.stderr
    assert (REPO / "BENCHMARKS.md").read_bytes() == before


def test_plan_names_the_throughput_sizes_and_a_sweep():
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    lines = out.strip().splitlines()
    assert any("train_throughput.py --sizes 124M,350M" in ln for ln in lines)
    assert any("scaling_cli demo --spec" in ln for ln in lines)
    sizes = subprocess.run([sys.executable, "-c", "import ast, sys; t = ast.parse(open(sys.argv[1]).read()); "
                            "print([ast.literal_eval(n.value) for n in t.body if isinstance(n, ast.Assign) "
                            "and getattr(n.targets[0], 'id', '') == 'SIZES'][0].keys())",
                            str(REPO / "bench" / "train_throughput.py")],
                           capture_output=True, text=True, check=True).stdout
    assert "124M" in sizes and "350M" in sizes  # the sizes it asks for exist there
