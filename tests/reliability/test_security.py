"""Hostile names and files: nothing escapes the runs dir, nothing from a user file is executed
or unpickled, the HTML report shows user strings as text, and a spec runs no command."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import (  # noqa: E402
    REPO,
    fake_study,
    run_cli,
    snapshot,
    study_configs,
    study_csv,
    write_finished_run,
)

from scaling import runs  # noqa: E402
from scaling.errors import UserError  # noqa: E402

PACKAGES = ("scaling", "sweeps", "analysis")


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "name",
    ["..", "../x", "a/../../x", "a/..", "/etc", "//x", "\\x", "a\x00b", "", "a//b", "./../x"],
)
def test_safe_child_refuses_escapes(tmp_path, name):
    with pytest.raises(UserError) as e:
        runs.safe_child(tmp_path / "runs", name)
    assert "\n" not in str(e.value)


def test_safe_child_refuses_symlink_out_and_allows_plain_names(tmp_path):
    base = tmp_path / "runs"
    outside = tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "link").symlink_to(outside)
    (base / "inner").mkdir()
    (base / "ok_link").symlink_to(base / "inner")  # a link that stays inside is fine
    for name in ("link", "link/run"):
        with pytest.raises(UserError, match="outside"):
            runs.safe_child(base, name)
    assert runs.safe_child(base, "sweep/run-1.x") == base / "sweep" / "run-1.x"
    assert runs.safe_child(base, "ok_link/r") == base / "ok_link" / "r"
    assert runs.safe_child(base, "c1.0e+09_n123_d1e5") == base / "c1.0e+09_n123_d1e5"


@pytest.mark.parametrize("sweep", ["../../escaped", "/tmp/escaped", "a/../../escaped"])
def test_run_config_sweep_name_cannot_escape(tmp_path, sweep):
    cfg = study_configs(budgets=(1e9,), widths=(8,), sweep=sweep)[0]
    (tmp_path / "runs").mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UserError):
        runs.init_run_dir(tmp_path / "runs", cfg)
    assert snapshot(tmp_path) == before
    assert not (tmp_path.parent / "escaped").exists()


def test_symlinked_run_dirs_outside_are_ignored_by_every_reader(tmp_path):
    from analysis.load import load_curves, load_points
    from sweeps.status import status_rows

    runs_dir = tmp_path / "runs"
    fake_study(runs_dir, sweep="mine", budgets=(1e9, 3e9), widths=(8, 16, 32))
    outside = tmp_path / "outside"
    foreign = fake_study(outside, sweep="theirs", budgets=(1e9,), widths=(12,))
    (runs_dir / "theirs").symlink_to(foreign[0].parent)  # a sweep dir pointing out
    (runs_dir / "mine" / "stolen").symlink_to(foreign[0])  # a run dir pointing out
    listed = runs.list_run_dirs(runs_dir)
    assert len(listed) == 6 and all("mine" in p.parts and p.name != "stolen" for p in listed)
    assert len(status_rows(runs_dir)) == 6
    points, _ = load_points(runs_dir)
    assert len(points) == 6 and not points["run_dir"].str.contains("theirs|stolen").any()
    assert set(load_curves(runs_dir)["run"]) == set(points["run"])


def test_wsd_branch_source_cannot_point_outside_the_sweep(tmp_path, monkeypatch):
    """config.json's wsd.branch_of names the run whose checkpoint seeds a branch; a hostile
    value must not make the worker restore a checkpoint from outside the runs dir."""
    import sweeps.wsd
    from sweeps.launch import worker

    cfg = study_configs(budgets=(1e9,), widths=(8,), sweep="s")[0]
    run_dir = runs.init_run_dir(tmp_path / "runs", cfg)
    victim = tmp_path / "elsewhere"
    (victim / "checkpoints" / "5").mkdir(parents=True)
    runs.update_config_fields(run_dir, wsd={"branch_of": "../../elsewhere", "branch_step": 5})
    seeded = []
    monkeypatch.setattr(sweeps.wsd, "start_from", lambda *a: seeded.append(a))
    with pytest.raises(UserError):
        worker._wsd_args(run_dir)
    assert seeded == []


# ----------------------------------------------------------------------------- no code from data


SOURCE_FILES = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
FORBIDDEN = {
    "pickle": r"\b(c?[pP]ickle|dill|cloudpickle|joblib)\b",
    "eval/exec": r"(?<![\w.])(eval|exec)\s*\(",
    "compile": r"(?<![\w.])compile\s*\(",
    "shell=True": r"shell\s*=\s*True",
    "os.system/popen": r"\bos\.(system|popen|exec\w*|spawn\w*)\s*\(",
    "yaml.load": r"\byaml\.(unsafe_)?load\s*\(",
    "np.load pickle": r"allow_pickle\s*=\s*True",
    "marshal/shelve": r"\b(marshal|shelve)\b",
    "torch.load": r"\btorch\.load\s*\(",
    "__import__": r"__import__\s*\(",
    "pd.read_pickle": r"read_pickle",
}
# Reviewed exceptions, matched by file and code: `scaling train` re-executes its own
# interpreter with its own command line (host_env: glibc reads its tunables only at start).
ALLOWED = {("scaling/host_env.py",
            "os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)")}


@pytest.mark.parametrize("rule", sorted(FORBIDDEN))
def test_no_code_execution_from_user_files(rule):
    """Configs are TOML/JSON, data is text/CSV/JSONL, checkpoints are orbax (tensorstore), fits
    are JSON: nothing in the packages unpickles, evals or shells out."""
    pattern = re.compile(FORBIDDEN[rule])
    hits = []
    for path in SOURCE_FILES:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            allowed = (str(path.relative_to(REPO)), code.strip()) in ALLOWED
            if pattern.search(code) and not code.lstrip().startswith(('"', "'")) and not allowed:
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert SOURCE_FILES and not hits, hits


def test_subprocesses_take_argument_lists_never_strings():
    """Every process the suite starts gets an argv list built from fixed parts, so no user
    string is ever parsed by a shell."""
    calls = []
    for path in SOURCE_FILES:
        text = path.read_text()
        for m in re.finditer(
            r"subprocess\.(Popen|run|call|check_call|check_output)\(\s*([^,)]+)", text
        ):
            calls.append((path.relative_to(REPO), m.group(2).strip()))
    assert calls
    for where, first in calls:
        assert not first.startswith(('f"', "f'", '"', "'")), (where, first)


def test_json_readers_do_not_execute_anything(tmp_path):
    """A config.json / status.json / fit.json crafted with Python-looking payloads is data."""
    from analysis.artifacts import read_fit

    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    run_dir = tmp_path / "runs" / "s" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(f'{{"model": "{payload}"}}')
    (run_dir / "status.json").write_text(f'{{"state": "{payload}"}}')
    (tmp_path / "fit.json").write_text(f'{{"approach3": "{payload}"}}')
    with pytest.raises(UserError):
        runs.load_run_config(run_dir)
    with pytest.raises(UserError):
        runs.read_status(run_dir)
    assert read_fit(tmp_path / "fit.json")["approach3"] == payload
    assert not marker.exists()


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "table,key",
    [
        ("launcher", "command"),
        ("launcher", "train_cmd"),
        ("train", "cmd"),
        ("", "exec"),
        ("launcher", "setup"),
        ("launcher", "python"),
    ],
)
def test_spec_has_no_key_that_runs_a_command(table, key):
    from sweeps.spec import parse_spec

    d = {"name": "x", "budgets": [1e12]}
    if table:
        d[table] = {key: "touch pwned"}
    else:
        d[key] = "touch pwned"
    with pytest.raises(UserError, match="unknown key"):
        parse_spec(d)


@pytest.mark.parametrize("key", ["partition", "account", "qos", "constraint"])
@pytest.mark.parametrize(
    "value",
    ["a\n#SBATCH --wrap=touch pwned", "a; touch pwned", "$(touch pwned)", "`touch pwned`", "a b"],
)
def test_slurm_options_cannot_carry_shell_or_sbatch_lines(key, value):
    from sweeps.spec import parse_spec

    with pytest.raises(UserError, match=f"launcher.{key}"):
        parse_spec({"name": "x", "budgets": [1e12], "launcher": {"kind": "slurm", key: value}})


def test_launcher_runs_only_the_worker_or_the_documented_hook(tmp_path, monkeypatch):
    """The local launcher's command line is fixed (python -m sweeps.launch.worker RUN_DIR);
    only the documented test hook (train_cmd / SCALING_TRAIN_CMD) replaces the trainer,
    and it comes from the caller's environment, never from a spec."""
    from sweeps.launch import local
    from sweeps.sweep import TRAIN_CMD_ENV

    cfg = study_configs(budgets=(1e9,), widths=(8,), sweep="s")[0]
    run_dir = runs.init_run_dir(tmp_path / "runs", cfg)
    seen = []

    class Recorder:
        def __init__(self, cmd, **kwargs):
            seen.append(cmd)
            self.pid = 2**31 - 16  # no such process: the launcher's affinity call is a no-op

        def poll(self):
            runs.write_result(run_dir, {"eval_loss": 1.0})
            return 0

    monkeypatch.setattr(local, "gpu_ids", lambda: [])
    monkeypatch.setattr(local.subprocess, "Popen", Recorder)
    local.run_local([run_dir], workers=1, poll_s=0.01)
    assert seen == [[sys.executable, "-m", "sweeps.launch.worker", str(run_dir)]]
    assert TRAIN_CMD_ENV == "SCALING_TRAIN_CMD"
    from sweeps import spec as spec_module

    assert "TRAIN_CMD" not in Path(spec_module.__file__).read_text()


# ----------------------------------------------------------------------------- HTML report

HOSTILE = {
    "run": "<script>alert(1)</script>",
    "sweep": "<img src=x onerror=alert(2)>",
    "column": "<b onmouseover=alert(3)>x</b>",
    "source": "study<svg onload=alert(4)>",
}


@pytest.mark.slow
def test_html_report_escapes_every_user_string(tmp_path):
    csv = study_csv(tmp_path / "plain.csv", budgets=(1e9, 3e9, 1e10), widths=(8, 16, 24, 32, 48))
    lines = csv.read_text().splitlines()
    out = [lines[0] + ",sweep," + HOSTILE["column"]]
    for i, line in enumerate(lines[1:]):
        fields = line.split(",")
        if i == 2:  # the worst-fitting run, so the report lists it
            fields[0] = HOSTILE["run"]
            fields[3] = str(float(fields[3]) * 1.3)
        out.append(",".join(fields) + f",{HOSTILE['sweep']},1")
    hostile_csv = tmp_path / f"{HOSTILE['source']}.csv"
    hostile_csv.write_text("\n".join(out) + "\n")
    r = run_cli(["report", hostile_csv.name, "-o", "out"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    page = (tmp_path / "out" / "report.html").read_text()
    text = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', 'src=""', page)
    for what, value in HOSTILE.items():
        assert value not in text, f"raw {what} in report.html"
        assert html.escape(value) in text, f"{what} not shown (escaped) in report.html"
    tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", text))
    assert tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "p",
        "ul",
        "li",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "figure",
        "img",
        "figcaption",
        "code",
        "em",
        "strong",
    }, tags
    assert not re.search(r"\bon\w+\s*=", re.sub(r"&lt;.*?&gt;", "", text))
    md = (tmp_path / "out" / "report.md").read_text()
    for value in HOSTILE.values():
        assert value not in md
    written = {p for p in snapshot(tmp_path) if not p.startswith("out")}
    assert written <= {"plain.csv", hostile_csv.name, f"{HOSTILE['source']}.fit.json"}, written


def test_runs_from_a_hostile_csv_name_write_nothing_outside(tmp_path):
    """A CSV's `run` column is data: fitting it writes fit.json beside the CSV and nothing else."""
    csv = study_csv(tmp_path / "s.csv", budgets=(1e9, 3e9), widths=(8, 16, 24))
    lines = csv.read_text().splitlines()
    lines[1] = "../../../escaped" + lines[1][lines[1].index(",") :]
    lines[2] = "/tmp/escaped-abs" + lines[2][lines[2].index(",") :]
    csv.write_text("\n".join(lines) + "\n")
    (tmp_path / "work").mkdir()
    r = run_cli(["fit", "../s.csv", "--approach", "2"], cwd=tmp_path / "work")
    assert r.returncode == 0, r.stderr
    assert sorted(snapshot(tmp_path)) == ["s.csv", "s.fit.json", "work"]
    assert not Path("/tmp/escaped-abs").exists()


def test_status_of_hostile_run_names_is_plain_text(tmp_path):
    runs_dir = tmp_path / "runs"
    cfg = study_configs(budgets=(1e9,), widths=(8,), sweep=HOSTILE["sweep"])[0]
    write_finished_run(runs_dir, cfg, state="failed", reason="[red]x[/red] \x1b[2J<script>")
    r = run_cli(["status", "runs", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads(r.stdout)["runs"]
    assert rows[0]["sweep"] == HOSTILE["sweep"] and rows[0]["state"] == "failed"
