"""The vendored public reference data is present and unchanged (data/reference/README.md)."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
FILES = {  # name -> (data rows, sha256 recorded in the README)
    "chinchilla_svg_extracted.csv": 245,
    "marin_comma.csv": 85,
    "marin_dclm.csv": 85,
    "marin_nemotron.csv": 88,
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_reference_file_is_vendored_unchanged(name):
    path = REFERENCE / name
    assert path.is_file(), f"{path} is missing: the reference tests need it"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"`{digest}`" in (REFERENCE / "README.md").read_text(), f"{name} changed"
    assert len(pd.read_csv(path)) == FILES[name]
