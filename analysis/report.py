"""A study's report: figures, Markdown and a self-contained HTML page from the saved fit.

The report is first built as a small list of blocks (headings, paragraphs, tables, figures)
and then rendered twice, to Markdown and to HTML, so the two never disagree. Every string
that comes from the user's data (run names, sweep names, column names, paths) passes
through `html.escape` in the HTML; figures are embedded as base64 PNG data URIs, and the
page loads nothing from anywhere else.

The fit is read from `fit.json` (the `scaling fit` artefact); only when it does not exist
is it computed once, by the same function as `scaling fit SRC`, and saved for next time.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis import artifacts, plots, tune_plots
from analysis.approach2 import PowerLawResult
from analysis.bootstrap import Holdout
from analysis.fitdoc import FitDocument, default_fit_path, read_fit, write_fit
from analysis.fits import fit_points, fit_source
from analysis.load import load_curves, load_points
from analysis.numfmt import fmt_num
from analysis.plots import human_count, human_flops
from analysis.prereg import RECORD_NAME as FORECAST_CHECK_NAME
from analysis.recommend import family_options, recommend
from scaling.errors import UserError
from scaling.fileio import atomic_write_text, read_json

APPROACH_TITLES = {"approach1": "Approach 1", "approach2": "Approach 2",
                   "approach3": "Approach 3", "vpnls": "VPNLS"}
ROWS = [  # (key in the approach block, label)
    ("a", "a (N* ~ C^a)"), ("b", "b (D* ~ C^b)"), ("k_params", "k_params"),
    ("k_tokens", "k_tokens"), ("G", "G"), ("A", "A"), ("B", "B"), ("E", "E"),
    ("alpha", "alpha"), ("beta", "beta"), ("objective", "Huber objective (summed)"),
    ("n_points", "points"),
]


# --------------------------------------------------------------------------- document


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def h(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def figure(self, path: Path, rel: str, caption: str) -> None:
        self.blocks.append(("img", Path(path), rel, caption))


def _md_text(text: str) -> str:
    # Entities render as the character in every Markdown viewer, and keep raw HTML out.
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    out = [f"# {_md_text(doc.title)}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            out += [f"## {_md_text(block[1])}", ""]
        elif kind == "p":
            out += [_md_text(block[1]), ""]
        elif kind == "ul":
            out += [f"- {_md_text(item)}" for item in block[1]] + [""]
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            _, _, rel, caption = block
            out += [f"![{_md_text(caption)}]({rel})", "", f"*{_md_text(caption)}*", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1.2em;color:#1a1a1a;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:1.8em;color:#0b3d66}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #c8c8c8;padding:.3em .6em;text-align:right}
th{background:#eef3f8}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444;margin-top:.3em}
li{margin:.25em 0}code{background:#f2f2f2;padding:0 .2em}
"""


def render_html(doc: Document) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(doc.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(doc.title)}</h1>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h2":
            out.append(f"<h2>{esc(block[1])}</h2>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</tbody></table>")
        elif kind == "img":
            _, path, _, caption = block
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- formatting


def fmt_ci(value, ci) -> str:
    """'value [lo, hi]', or the value alone without an interval."""
    return fmt_num(value) + (f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]" if ci else "")


# --------------------------------------------------------------------------- sections


def fit_table(fit: FitDocument) -> tuple[list[str], list[list[str]]]:
    """Every approach side by side: rows are quantities, cells are 'value [lo, hi]'."""
    blocks = {n: r.to_dict() for n, r in fit.fitted().items()}
    header = ["quantity"] + [APPROACH_TITLES[n] for n in blocks]
    rows = []
    for key, label in ROWS:
        if not any(key in b for b in blocks.values()):
            continue
        rows.append([label] + [fmt_ci(b[key], fit.interval(n, key)) if key in b else "-"
                               for n, b in blocks.items()])
    return header, rows


def _budget_rows(points, fit: FitDocument, col: str) -> tuple[list[list[str]], list[float]]:
    a2 = fit.fitted().get("approach2")
    minima = {round(math.log10(m.budget), 2): m
              for m in (a2.minima if isinstance(a2, PowerLawResult) else ())}
    rows, unbracketed = [], []
    for budget, group in points.groupby("budget"):
        m = minima.get(round(math.log10(budget), 2))
        if m is not None and not m.bracketed:
            unbracketed.append(float(budget))
        rows.append([human_flops(budget), str(len(group)),
                     f"{human_count(group[col].min())} - {human_count(group[col].max())}",
                     f"{human_count(group['tokens'].min())} - {human_count(group['tokens'].max())}",
                     fmt_num(group["loss"].min(), 4),
                     "-" if m is None else human_count(m.params_opt),
                     "-" if m is None else ("yes" if m.bracketed else "NO")])
    return rows, unbracketed


def _excluded_text(counts: dict) -> str:
    parts = [f"{k}: {v}" for k, v in counts.items() if isinstance(v, int | float) and v]
    return ", ".join(parts) if parts else "none"


def _data_section(doc: Document, points, fit: FitDocument, col: str, excluded: dict) -> list:
    doc.h("Data")
    budgets = sorted(float(b) for b in points["budget"].dropna().unique())
    unassigned = int(points["budget"].isna().sum())
    span = f" ({math.log10(budgets[-1] / budgets[0]):.1f} decades)" if budgets else ""
    doc.ul([
        f"{len(points)} finished runs used, in {len(budgets)} budgets"
        + (f" from {human_flops(budgets[0])} to {human_flops(budgets[-1])} FLOPs" if budgets
           else "") + span
        + (f"; {unassigned} runs match no budget level (used by Approach 3 only)."
           if unassigned else "."),
        f"Excluded runs: {_excluded_text(excluded)}.",
        *([f"Sweeps: {', '.join(sorted(map(str, points['sweep'].dropna().unique())))}."]
          if "sweep" in points and points["sweep"].astype(bool).any() else []),
        f"Model sizes: {human_count(points[col].min())} to {human_count(points[col].max())} "
        "parameters; "
        f"losses {points['loss'].min():.4g} to {points['loss'].max():.4g} nats/token.",
    ])
    budget_rows, unbracketed = _budget_rows(points, fit, col)
    doc.table(["budget (FLOPs)", "runs", "N range", "D range", "best loss", "IsoFLOP N*",
               "minimum bracketed"], budget_rows)
    return unbracketed


def _laws_section(doc: Document, fit: FitDocument) -> None:
    doc.h("Fitted laws, all approaches")
    header, rows = fit_table(fit)
    if fit.bootstrap:
        intervals = f"Point estimates with {fit.level():.0%} bootstrap intervals in brackets. "
    else:
        intervals = ("Point estimates only: the fit was not bootstrapped (run `scaling fit "
                     "--bootstrap 1000` for intervals). ")
    doc.p(intervals + "Under C = 6ND: N*(C) = G (C/6)^a and D*(C) = (C/6)^b / G for the "
          "parametric law; N*(C) = k_params C^a, D*(C) = k_tokens C^b for approaches 1 and 2.")
    doc.table(header, rows)
    failed = [f"{APPROACH_TITLES[n]}: {e}" for n, e in fit.errors().items()]
    if failed:
        doc.p("Approaches that could not be fitted on these data:")
        doc.ul(failed)
    holdout = fit.validation.get("holdout")
    if holdout is not None:
        doc.p(f"Leave-largest-budget-out check: fitted on the budgets below "
              f"{human_flops(holdout.budget)}, predicting that budget's IsoFLOP "
              "minimum (observed: the parabola vertex of its own runs).")
        doc.table(["approach", "predicted N*", "observed N*", "N* error",
                   "predicted min loss", "observed min loss", "mean |loss error| per run"],
                  holdout_rows(holdout))

    if fit.rollout:
        rows = rollout_rows(fit.rollout)
        if rows:
            doc.p(f"Rolling-origin validation over {fit.rollout['mode']}: fit on each "
                  "origin's past, predict what follows ("
                  f"{fit.rollout['level']:.0%} prediction intervals).")
            doc.table(["predicted", "fitted runs", "loss* error", "ln(N* pred/obs)",
                       "mean |loss error| per run", "runs in PI"], rows)

def _recommendation_section(doc: Document, fit: FitDocument, rec) -> None:
    doc.h(f"Recommendation for C = {human_flops(rec.budget)} FLOPs")
    lvl = f" ({rec.level:.0%} interval)" if rec.level else ""
    doc.p(f"From {APPROACH_TITLES.get(rec.approach, rec.approach)}; mode: "
          f"{rec.mode.replace('_', '-')}{lvl}.")
    rec_rows = [
        ["parameters N*", human_count(rec.n_params), _ci_text(rec.ci.get("n_params"), True)],
        ["tokens D*", human_count(rec.n_tokens), _ci_text(rec.ci.get("n_tokens"), True)],
        ["tokens per parameter", f"{rec.tokens_per_param:.1f}",
         _ci_text(rec.ci.get("tokens_per_param"))],
        ["predicted loss (nats/token)", fmt_num(rec.loss, 4), _ci_text(rec.ci.get("loss"))],
    ]
    if rec.ci:
        doc.table(["quantity", "value", "interval"], rec_rows)
    else:
        doc.table(["quantity", "value"], [row[:2] for row in rec_rows])
    other = _other_approaches(fit, rec.budget)
    if other:
        doc.p("N* and D* at this budget from every approach:")
        doc.table(["approach", "N*", "D*", "tokens per parameter"], other)
    if rec.shape:
        s = rec.shape
        doc.p(f"Nearest shape under shape recipe {rec.shape_recipe}:")
        doc.table(["n_layers", "d_model", "n_heads", "head_dim", "d_ff", "vocab", "seq_len",
                   "total params", "non-embedding params", "error vs N*", "tokens for C"],
                  [[str(s.get("n_layers")), str(s.get("d_model")), str(s.get("n_heads")),
                    str(s.get("head_dim")), str(s.get("d_ff")), str(s.get("vocab_size")),
                    str(s.get("seq_len")), fmt_num(rec.shape_params),
                    fmt_num(rec.shape_params_non_embedding),
                    f"{rec.shape_rel_error:+.2%}" if rec.shape_rel_error is not None else "-",
                    human_count(rec.shape_tokens)]])


def _tune_section(doc: Document, law_path: Path, law) -> None:
    doc.h(f"Learning-rate tuning: {law.name}")
    doc.p(f"From the [tune] block's runs ({law_path}); recipe {law.name} (batch and warmup "
          f"rules of {law.base_recipe}"
          + (", batch from B*(C)" if law.batch is not None else "") + ") uses this law.")
    doc.ul(tune_plots.law_lines(law))
    doc.table(["N", "D", "batch (tokens)", "lr tried", "lr*", "loss at lr*", "bracketed"],
              tune_plots.cell_rows(law))
    bad = [c.message for c in law.cells if not c.bracketed]
    if bad:
        doc.p("Cells left out of the law (their optimum is not bracketed by the grid):")
        doc.ul(bad)


def _forecast_check_section(doc: Document, check: Mapping[str, Any]) -> None:
    doc.h("Preregistered forecast check")
    lo, hi = check["loss_pi"]
    doc.p(f"The forecast of run {check['run']} was saved before it trained, from the fit "
          f"{check.get('fit_path') or '-'}; it is scored against the run's final eval loss.")
    doc.table(["N", "D", "forecast loss", f"{check['level']:.0%} PI", "observed loss", "error",
               "inside PI"],
              [[human_count(check["forecast_n_params"]), human_count(check["forecast_n_tokens"]),
                fmt_num(check["forecast_loss"], 4), f"[{fmt_num(lo, 4)}, {fmt_num(hi, 4)}]",
                fmt_num(check["observed_loss"], 4), f"{check['error']:+.2%}",
                "yes" if check["inside_pi"] else "no"]])


def build_document(points, fit: FitDocument, rec, *, source: str, excluded: dict | None = None,
                   figures: Sequence[tuple[Path, str, str]] = (),
                   fit_warnings: Sequence[str] = (), tune_laws: Sequence = (),
                   forecast_check: Mapping[str, Any] | None = None) -> Document:
    """The report's content from already-loaded data, fit and recommendation. `excluded`
    counts the runs left out by reason (default: the fit's own count); `tune_laws` are
    (path, analysis.lr_law.LrLaw) of the [tune] blocks that belong to the source;
    `forecast_check`: a check-forecast record (analysis.prereg) to show."""
    doc = Document("Scaling-law report")
    col = "params"
    if fit.params_kind == "non_embedding" and "params_non_embedding" in points:
        col = "params_non_embedding"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc.p(f"Source: {source}. Generated {now}. FLOPs convention: "
          f"{fit.convention}; N is the {'non-embedding' if col != 'params' else 'total'}"
          " parameter count.")
    unbracketed = _data_section(doc, points, fit, col,
                                dict(fit.excluded if excluded is None else excluded))
    _laws_section(doc, fit)
    _recommendation_section(doc, fit, rec)
    for law_path, law in tune_laws:
        _tune_section(doc, law_path, law)
    if forecast_check:
        _forecast_check_section(doc, forecast_check)
    worst = worst_fit_rows(points, fit, col)
    if worst:
        doc.h("Runs the parametric law fits worst")
        doc.table(["run", "N", "D", "loss", "law", "residual (log)"], worst)
    extra = [c for c in points.columns if c not in _STANDARD_COLUMNS]
    if extra:
        doc.p("Other columns in the data (kept, not used by the fit): " + ", ".join(map(str, extra))
              + ".")
    doc.h("Caveats")
    # Bracketing has its own caveat line; other warnings of the fit are passed on.
    doc.ul(caveats(points, fit, rec, unbracketed)
           + [f"Fit warning: {w}" for w in fit_warnings if "not bracketed" not in w])
    if figures:
        doc.h("Figures")
        for path, rel, caption in figures:
            doc.figure(path, rel, caption)
    return doc


_STANDARD_COLUMNS = ("run", "params", "params_non_embedding", "tokens", "flops", "budget", "loss",
                     "sweep", "eval_bpb", "run_dir")


def worst_fit_rows(points, fit: FitDocument, col: str, k: int = 5) -> list[list[str]]:
    """The k runs with the largest |log L - log L_fit| under the parametric law."""
    _, law = fit.parametric()
    if law is None:
        return []
    predicted = law.predict(points[col].to_numpy(float), points["tokens"].to_numpy(float))
    residual = np.log(points["loss"].to_numpy(float)) - np.log(predicted)
    order = np.argsort(-np.abs(residual))[:k]
    names = points["run"] if "run" in points else points.index
    return [[str(names.iloc[i]), human_count(points[col].iloc[i]),
             human_count(points["tokens"].iloc[i]), fmt_num(points["loss"].iloc[i], 4),
             fmt_num(predicted[i], 4), f"{residual[i]:+.4f}"] for i in order]


def rollout_rows(rollout: Mapping[str, Any]) -> list[list[str]]:
    """Rows of the rollout table from fit.json's "rollout" block (analysis.rollout)."""
    def _finite(x) -> bool:
        return isinstance(x, int | float) and math.isfinite(x)

    rows = []
    for st in rollout.get("steps") or []:
        target = (human_flops(st["target"]) if rollout.get("mode") == "budgets"
                  else f"N >= {human_count(st['target'])}")
        rows.append([target, str(st["n_train"]),
                     f"{st['loss_opt_error']:+.2%}" if _finite(st.get("loss_opt_error")) else "-",
                     f"{st['params_opt_log_error']:+.3f}"
                     if _finite(st.get("params_opt_log_error")) else "-",
                     f"{st['points_loss_mean_abs_rel_error']:.2%}",
                     f"{st['points_pi_coverage']:.0%}"])
    return rows


def holdout_rows(holdout: Holdout) -> list[list[str]]:
    """Rows of the holdout table (analysis.bootstrap.Holdout)."""
    rows = []
    for name in ("approach2", "approach3"):
        h = holdout.predicted.get(name)
        if h is None:
            continue
        log_error = h.get("params_opt_log_error")
        rows.append([
            APPROACH_TITLES[name], human_count(h["params_opt"]),
            human_count(holdout.observed_params_opt),
            "-" if log_error is None else f"{math.exp(log_error) - 1:+.1%}",
            fmt_num(h.get("loss_opt"), 4), fmt_num(holdout.observed_loss_opt, 4),
            f"{h['points_loss_mean_abs_rel_error']:.2%}"
            if "points_loss_mean_abs_rel_error" in h else "-"])
    return rows


def _ci_text(ci, count: bool = False) -> str:
    fmt = human_count if count else fmt_num
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "-"


def _count_ci(value, ci) -> str:
    return human_count(value) + (" " + _ci_text(ci, True) if ci else "")


def _other_approaches(fit: FitDocument, budget: float) -> list[list[str]]:
    rows = []
    for name in fit.fitted():
        r = recommend(fit, budget, approach=name, vocab_size=None)
        rows.append([APPROACH_TITLES[name], _count_ci(r.n_params, r.ci.get("n_params")),
                     _count_ci(r.n_tokens, r.ci.get("n_tokens")),
                     f"{r.tokens_per_param:.1f}"])
    return rows


def caveats(points, fit: FitDocument, rec, unbracketed: list[float]) -> list[str]:
    out = []
    n_points = len(points)
    out.append(f"{n_points} points for a 5-parameter law"
               + (" - few; intervals are wide and the fit can hinge on single runs."
                  if n_points < 30 else "."))
    if unbracketed:
        out.append("Minimum NOT bracketed (the lowest loss is at the smallest or largest size "
                   "tried) for budgets " + ", ".join(human_flops(b) for b in unbracketed)
                   + ": their Approach 2 minima are extrapolations; widen the size grid there.")
    elif "approach2" in fit.fitted():
        out.append("Every budget's IsoFLOP minimum is bracketed by the sizes tried.")
    largest = float(np.nanmax(points["flops"] if "flops" in points else points["budget"]))
    decades = math.log10(rec.budget / largest)
    if decades > 0:
        out.append(f"The target budget is {decades:.1f} decades of FLOPs beyond the most "
                   f"compute any run used ({human_flops(largest)}); the error of an "
                   "extrapolation grows with that distance.")
    else:
        out.append("The target budget is inside the range of the data (no extrapolation).")
    kind = fit.params_kind
    if "params_non_embedding" in points and points["params_non_embedding"].notna().any():
        share = 1 - points["params_non_embedding"] / points["params"]
        out.append(f"N is the {kind.replace('_', '-')} parameter count. Embeddings are "
                   f"{share.min():.0%} to {share.max():.0%} of the total N of these runs"
                   + ("; at this scale the choice of N moves the fitted exponents, so compare "
                      "with a fit on the other count." if share.max() > 0.2 else "."))
    else:
        out.append(f"N is the {kind.replace('_', '-')} parameter count (non-embedding counts "
                   "are not in the data).")
    a_values = [ci for n in fit.fitted() if (ci := fit.interval(n, "a")) is not None]
    if len(a_values) >= 2:
        lo = max(ci[0] for ci in a_values)
        hi = min(ci[1] for ci in a_values)
        out.append("The approaches' intervals for a overlap." if lo <= hi else
                   "The approaches' intervals for a do NOT overlap: the data do not pin "
                   "down the exponent; see the figures.")
    out += list(rec.notes)
    return out


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class ReportPaths:
    out_dir: Path
    markdown: Path
    html: Path
    figures: tuple[Path, ...]
    fit: Path


def _figures(fig_dir: Path, src: Path, points, fit: FitDocument, budget: float):
    """Every figure of the report, saved as PNG: (path, relative path, caption)."""
    makers = [
        ("isoflop", lambda: plots.isoflop_figure(points, fit),
         "IsoFLOP profiles: final loss against N for each budget, with the fitted parabolas "
         "and their minima (open star: not bracketed)."),
        ("frontier", lambda: plots.frontier_figure(fit, points, budget=budget),
         "Compute-optimal N* and D* against C for every approach, with bootstrap bands and "
         "Chinchilla / Kaplan references."),
        ("landscape", lambda: plots.landscape_figure(fit, points, budget=budget),
         "The fitted loss L(N, D) with the efficient frontier and IsoFLOP lines."),
        ("residuals", lambda: plots.residuals_figure(points, fit),
         "Residuals of the parametric fit (log loss), by model size and budget."),
    ]
    if fit.rollout.get("steps"):
        makers.append(("rollout", lambda: plots.rollout_figure(fit.rollout),
                       "Rolling-origin validation: each run of the next budget (or of larger "
                       "models) forecast from the fit on what came before, against its "
                       "observed loss."))
    try:
        curves = load_curves(src) if src.is_dir() else None
    except (UserError, ValueError):  # unreadable curves cost the figure, not the report
        curves = None
    if curves is not None and len(curves):
        makers.append(("curves", lambda: plots.curves_figure(curves),
                       "Training curves coloured by model size, with their lower envelope."))
    return [(plots.save_figure(make(), fig_dir / f"{name}.png"), f"figures/{name}.png", caption)
            for name, make, caption in makers]


def build_report(src: str | Path, *, fit_path: str | Path | None = None,
                 out_dir: str | Path | None = None, budget: float | None = None,
                 approach: str = "approach3", points=None, info=None) -> ReportPaths:
    """Load the runs, read (or once compute and save) the fit, and write figures, report.md
    and report.html into `out_dir` (default beside the data: <RUNS_DIR>/report,
    <stem>_report). The fit, when computed, is `scaling fit`'s default fit of the source.

    `points`/`info` may be given already loaded (e.g. from another CSV layout); `src` then
    only names the source and the default locations."""
    src = Path(src)
    if points is None and not src.exists():
        raise UserError(f"{src}: no such runs directory or CSV")
    fit_path = Path(fit_path) if fit_path is not None else default_fit_path(src)
    fit = read_fit(fit_path) if fit_path.is_file() else None
    fit_warnings: list[str] = []
    if fit is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = fit_source(src) if points is None else fit_points(points, info)
        fit_warnings = list(dict.fromkeys(str(w.message) for w in caught))
        write_fit(fit_path, fit)
    if points is None:
        # The same points the saved fit saw (it records how many top losses it dropped).
        points, info = load_points(src, drop_highest=fit.dropped_highest)
    if len(points) == 0:
        raise UserError(f"{src}: no finished runs to report on")
    out = Path(out_dir) if out_dir is not None else artifacts.default_report_dir(src)
    if budget is None:
        budget = 10.0 * float(np.nanmax(points["budget"]) if points["budget"].notna().any()
                              else np.nanmax(points["flops"]))
    family = artifacts.runs_model(src)
    rec = recommend(fit, budget, approach=approach, **family_options(family))
    tune_laws = tune_plots.find_tune_laws(src)
    figures = (_figures(out / "figures", src, points, fit, rec.budget)
               + tune_plots.tune_figures(out / "figures", tune_laws))
    excluded = (info.to_dict() if hasattr(info, "to_dict") else dict(info or {})).get("excluded")
    check_path = src / FORECAST_CHECK_NAME  # written by check-forecast or the demo
    check = read_json(check_path) if src.is_dir() and check_path.is_file() else None
    doc = build_document(points, fit, rec, source=str(src), excluded=excluded, figures=figures,
                         fit_warnings=fit_warnings, tune_laws=tune_laws,
                         forecast_check=check)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, render_markdown(doc))
    atomic_write_text(html_path, render_html(doc))
    return ReportPaths(out, md_path, html_path, tuple(p for p, _, _ in figures), fit_path)
