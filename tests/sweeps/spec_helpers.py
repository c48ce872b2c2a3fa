"""Sweep specs for the spec, plan and tune tests: the small grid they all plan, a two-budget
base spec, and the ways a test hands a spec over (a file for `load_spec`, TOML text for
`parse_spec`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from sweeps import spec


def small_grid(*, recipe: str = "tiny-bytes", min_steps: int = 10, min_sizes: int = 3) -> str:
    """Three sizes spanning 4x at every budget, the recipe, and the design checks' floors."""
    return (f'[grid]\nsizes = 3\nspan = 4.0\n[optim]\nrecipe = "{recipe}"\n'
            f"[checks]\nmin_steps = {min_steps}\nmin_sizes = {min_sizes}\n")


BASE = """
name = "t"
[data]
seq_len = 16
[budgets]
values = [1e10, 3e10]
""" + small_grid()


def write_spec(tmp_path: Path, text: str = BASE) -> Path:
    """`text` as the spec file tmp_path/s.toml (replacing an earlier one)."""
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str = BASE) -> spec.SweepSpec:
    """The spec `text` as `scaling plan` reads it: written to a file, then loaded."""
    return spec.load_spec(write_spec(tmp_path, text))


def parse_text(text: str) -> spec.SweepSpec:
    """The spec `text` parsed without a file."""
    return spec.parse_spec(tomllib.loads(text))
