"""Numeric arguments of `scaling plan` and `scaling sweep` have the bounds of their spec
fields: the same value is refused with the same words, one line, exit 2."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from scaling.errors import UserError
from scaling_cli.main import main
from sweeps import spec

DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "demo.toml")


@pytest.mark.parametrize("command, flag, value, toml", [
    (["plan", "--budget", "1e18"], "--sizes", "2", "[grid]\nsizes = 2\n"),
    (["plan", "--budget", "1e18"], "--span", "1", "[grid]\nspan = 1\n"),
    (["plan", "--budget", "1e18"], "--span", "2e6", "[grid]\nspan = 2e6\n"),
    (["plan", "--budget", "1e18"], "--seq-len", "1", "[data]\nseq_len = 1\n"),
    (["plan", "--budget", "1e18"], "--seq-len", "2097152", "[data]\nseq_len = 2097152\n"),
    (["plan"], "--budget", "1e31", "[budgets]\nvalues = [1e31]\n"),
    (["sweep", "spec.toml"], "--workers", "0", "[launcher]\nworkers = 0\n"),
])
def test_cli_bound_is_the_spec_fields(capsys, command, flag, value, toml):
    budgets = "" if toml.startswith("[budgets]") else "budgets = [1e12]\n"
    with pytest.raises(UserError) as e:
        spec.parse_spec(tomllib.loads(f"name = 'x'\n{budgets}{toml}"))
    expected = str(e.value).split(": ", 1)[1]  # what the spec field says, without its name
    assert main([*command, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"scaling {command[0]}: error: {flag}: {expected}"]


@pytest.mark.parametrize("args, flag", [
    (["plan", "--budget", "1e18", "--vocab-size", "2.5"], "--vocab-size"),
    (["plan", "--budget", "1e18", "--seq-len", "x"], "--seq-len"),
    (["plan", DEMO, "--tokens-per-second", "0"], "--tokens-per-second"),
    (["plan", DEMO, "--simulate", "--noise", "-0.1"], "--noise"),
    (["sweep", "spec.toml", "--workers", "two"], "--workers"),
])
def test_other_bad_numbers_exit_2_with_one_line(capsys, args, flag):
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith(f"scaling {args[0]}: error: {flag}: expected")
