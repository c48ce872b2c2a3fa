"""The published JSON Schema of the spec: generated from the validators, committed up to
date, and agreeing with them on the examples and on bad specs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from scaling.errors import UserError
from sweeps import spec

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "spec.schema.json"
REGENERATE = ("python -c 'import json, sweeps.spec as s; print(json.dumps(s.json_schema(), "
              "indent=2))' > docs/spec.schema.json")


def test_committed_schema_is_up_to_date():
    assert json.loads(COMMITTED.read_text()) == spec.json_schema(), f"stale: run {REGENERATE}"


def test_schema_names_every_spec_field():
    props = spec.json_schema()["properties"]
    for key, table in {"data": spec.DataSpec, "model": spec.ModelSpec, "grid": spec.GridSpec,
                       "schedule": spec.ScheduleSpec, "optim": spec.OptimSpec,
                       "train": spec.TrainSpec, "checks": spec.ChecksSpec,
                       "launcher": spec.LauncherSpec}.items():
        names = set(table.__dataclass_fields__) - {"overrides"}  # overrides: the recipe's keys
        assert names <= set(props[key]["properties"]), key
    assert {"name", "budgets", "convention", "seeds", "seed"} <= set(props)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.stem)
def test_examples_are_valid_against_the_schema(path):
    jsonschema.Draft202012Validator.check_schema(spec.json_schema())
    jsonschema.validate(tomllib.loads(path.read_text()), spec.json_schema())


@pytest.mark.parametrize("text", [
    "name = 'x'\nbudgets = [1e12]\nfoo = 1\n",
    "name = 'x'\nbudgets = [1e31]\n",
    "name = '.x'\nbudgets = [1e12]\n",
    "name = 'x'\nbudgets = [1e12]\nseed = 1\nseeds = [2]\n",
    "name = 'x'\n[budgets]\nmin = 1e10\nmax = 1e12\ncount = 101\n",
    "name = 'x'\nbudgets = [1e12]\n[grid]\nsizes = 2\n",
    "name = 'x'\nbudgets = [1e12]\n[grid]\nspan = 1.0\n",
    "name = 'x'\nbudgets = [1e12]\n[optim]\nlr = 0\n",
    "name = 'x'\nbudgets = [1e12]\n[optim]\nbatch_pow2 = 3\n",
    "name = 'x'\nbudgets = [1e12]\n[launcher]\npartition = 'a;b'\n",
    "name = 'x'\nbudgets = [1e12]\n[schedule]\nkind = 'linear'\n",
])
def test_schema_and_validator_refuse_the_same_specs(text):
    d = tomllib.loads(text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(d, spec.json_schema())
    with pytest.raises(UserError):
        spec.parse_spec(d)
