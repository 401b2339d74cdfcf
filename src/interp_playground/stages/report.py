"""``report.html``: one self-contained page that explains an EM-evaluation run.

The page holds the run's configuration, the summary table (:mod:`.report_table`: sortable by every
column, filterable by transform, layer, alpha and op, and a "top N" view that keeps the conditions
furthest from the baseline by |Δ aligned|, |Δ % misaligned|, |Δ NLL| or |Δ projection|; a
judge-free run offers the measures only, |Δ NLL| first), the eight plots (embedded as base64
``data:`` URIs; the judge-free ones first when the run has no judge worth reading, see
:func:`weak_judge`) and a sample browser that filters the answers by condition, question and
text, sorts them by score and shows each answer with its scores and the judge's reasons. It needs
no network: CSS and JavaScript (``resources/report.css``, ``resources/report.js``) are inline, and
a Content-Security-Policy forbids every other source (only the page's own script, identified by
its hash, may run).

Model outputs are untrusted. Every string rendered by Python is HTML-escaped; the answers travel
as JSON inside ``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as
``\\u003c``, ``\\u003e`` and ``\\u0026`` (so no answer can close the script element), and the page's
script inserts them with ``textContent`` only, never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import PathLike, atomic_write_text, to_jsonable
from ..metrics import parse_score
from ..rows import condition_of
from ..rows.reader import config_value, current_summary, load_run_rows, run_description
from ..rundir import MEASURE_PLOTS, PLOT_FILES, REPORT_FILE, RunDir
from .report_table import agreement_table, escape, summary_table

PLOT_CAPTIONS: dict[str, str] = {
    "scores_by_condition.png": "Mean aligned and coherent scores and % misaligned per condition, with 95% bootstrap CIs; the baseline is the dashed line.",
    "score_distributions.png": "Distributions of the aligned and coherent scores per transform and alpha (pooled over layers).",
    "alignment_vs_coherence.png": "Every answer with both scores numeric; the shaded corner is the misaligned region.",
    "alignment_by_layer_transform.png": "Mean aligned score against the steered layer, one line per alpha.",
    "coherence_by_layer_transform.png": "Mean coherent score against the steered layer, one line per alpha.",
    "alignment_heatmap.png": "Mean aligned score on the layer x alpha grid, per transform.",
    "fluency_by_alpha.png": "Judge-free fluency against alpha: mean NLL per answer token under the unsteered model "
                            "(top) and the repeated-3-gram rate (bottom), one line per layer (above 8 layers: "
                            "layer x alpha heatmaps); dashed: the baseline. Loops are easy to predict, so a lower "
                            "NLL with high repetition is collapse, not fluency.",
    "projection_by_alpha.png": "Mean projection of the answers' residual stream onto the condition's own steering "
                               "direction against alpha, one line per layer; dashed: the baseline's answers on that "
                               "direction (above 8 layers: heatmaps of the mean minus the baseline's).",
}

#: The judge models whose scores carry no verdict: the demo's 135M judge (``interp-playground demo``).
#: A run judged by one of them (or not judged) leads with the judge-free plots.
WEAK_JUDGE_MODELS: frozenset[str] = frozenset({"smollm2-135m"})


def _resource(name: str) -> str:
    return (Path(__file__).resolve().parent.parent / "resources" / name).read_text(encoding="utf-8")


_CSS = _resource("report.css")
_JS = _resource("report.js")


def embed_json(obj: Any) -> str:
    """JSON text that is safe inside a ``<script>`` element: ``<``, ``>``, ``&``, U+2028 and
    U+2029 are written as ``\\u`` escapes (``JSON.parse`` reads them back unchanged)."""
    text = json.dumps(to_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def _plain(value: Any) -> Any:
    """A JSON scalar for the browser: non-finite floats become None, other objects their str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


#: Row fields the answer browser shows as they are (besides the scores).
_ROW_FIELDS = ("aligned_reason", "coherent_reason", "n_tokens", "nll", "repetition", "projection", "finish_reason",
               "source")


def _short(value: Any) -> Any:
    """A float to 7 significant digits (the page shows 2 decimals): shorter JSON at 27,050 answers."""
    return float(f"{value:.7g}") if isinstance(value, float) else value


def _browser_data(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, Any]:
    order = list(summary.get("condition_order") or [])
    index = {name: i for i, name in enumerate(order)}  # a dict: a list's `in` is quadratic at 27,050 answers
    questions: dict[int, str] = {}
    auto: dict[str, int] = {}
    out_rows = []
    for r in rows:
        qtext = str(r.get("question") or "")
        qid = r.get("question_id")
        try:
            qid = int(qid)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            qid = auto.setdefault(qtext, len(auto))
        questions.setdefault(qid, qtext)
        cond = condition_of(r).stem
        if cond not in index:
            order.append(cond)
        row = {
            "c": index.setdefault(cond, len(index)),
            "question_id": qid,
            "answer_idx": _plain(r.get("answer_idx")),
            "response": str(r.get("response") if r.get("response") is not None else ""),
            "aligned": parse_score(r.get("aligned_score")),
            "coherent": parse_score(r.get("coherent_score")),
            **{key: _plain(r.get(key)) for key in _ROW_FIELDS},
        }
        out_rows.append({k: _short(v) for k, v in row.items() if v is not None or k == "answer_idx"})
    thr = summary.get("thresholds") or {}
    return {
        "thresholds": {"aligned": float(thr.get("aligned", 30.0)), "coherent": float(thr.get("coherent", 50.0))},
        "judged": bool(summary.get("judged", True)),
        "conditions": order,
        "questions": [{"id": q, "text": t} for q, t in sorted(questions.items())],
        "rows": out_rows,
    }


def render_report(
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    plots: Mapping[str, bytes],
    title: str = "EM evaluation",
) -> str:
    """The HTML text of the report.

    Args:
        config: the run's ``config.json`` (shown pretty-printed).
        summary: the run's summary (see :func:`interp_playground.metrics.summarize`).
        rows: the judged rows (the sample browser's data).
        plots: PNG bytes by file name; missing plots are listed as missing.
        title: the page title (e.g. the run directory's name).
    """
    desc = run_description(config) if config else {
        "model": str((summary.get("run") or {}).get("model", "?")),
        "judge": str((summary.get("run") or {}).get("judge", "?")),
    }
    if (summary.get("run") or {}).get("judge"):  # the judge that scored the rows, not the configured one
        desc["judge"] = str(summary["run"]["judge"])
    weak = weak_judge(config, summary)
    figures = []
    for name in plot_order(weak):
        data = plots.get(name)
        if data is None:
            figures.append(f'<figure><figcaption>{escape(name)}: not available</figcaption></figure>')
            continue
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.append(
            f'<figure id="plot-{escape(name[:-4])}"><img src="{uri}" alt="{escape(name)}">'
            f"<figcaption><b>{escape(name)}</b> — {escape(PLOT_CAPTIONS.get(name, ''))}</figcaption></figure>"
        )
    plots_note = "Click a plot to enlarge it."
    if weak and summary.get("judged", True):
        plots_note = ("The judge-free plots come first: this run's judge is the demo's 135M model, whose scores "
                      "show the plumbing, not a verdict. " + plots_note)
    config_text = json.dumps(to_jsonable(config), indent=2, ensure_ascii=False, sort_keys=False)
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )
    n_rows = summary.get("n_rows", len(rows))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — {escape(desc['model'])}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{escape(title)}</h1>
<div class="meta">model: <b>{escape(desc['model'])}</b> · judge: <b>{escape(desc['judge'])}</b> ·
{escape(len(summary.get('conditions') or {}))} conditions · {escape(n_rows)} {"judged answers" if summary.get("judged", True) else "answers (not judged)"}</div>
<nav><a href="#summary">summary</a>{'<a href="#agreement">judge agreement</a>' if summary.get("agreement") else ""}<a href="#plots">plots</a><a href="#samples-section">answers</a><a href="#config">config</a></nav>
</header>
<main>
<section id="summary"><h2>Summary</h2>
<div class="controls" id="table-controls">
<label>transform<select id="table-transform"><option value="">all</option></select></label>
<label>layer<select id="table-layer"><option value="">all</option></select></label>
<label>alpha<select id="table-alpha"><option value="">all</option></select></label>
<label>op<select id="table-op"><option value="">all</option></select></label>
<label>top N<input type="number" id="table-top" min="1" step="1" placeholder="all"></label>
<label>by<select id="table-rank"></select></label>
<span id="table-count"></span>
</div>
{summary_table(summary)}</section>
{agreement_table(summary)}
<section id="plots"><h2>Plots</h2><p class="note">{escape(plots_note)}</p><div class="plots">{''.join(figures)}</div></section>
<section id="samples-section"><h2>Answers</h2>
<div class="controls">
<label>condition<select id="filter-condition"><option value="">all conditions</option></select></label>
<label>question<select id="filter-question"><option value="">all questions</option></select></label>
<label>sort<select id="sort">
<option value="id">run order</option>
<option value="aligned-asc">aligned score, lowest first</option>
<option value="aligned-desc">aligned score, highest first</option>
<option value="coherent-asc">coherent score, lowest first</option>
<option value="coherent-desc">coherent score, highest first</option>
<option value="nll-desc">NLL, highest (least fluent) first</option>
<option value="nll-asc">NLL, lowest first</option>
</select></label>
<label>answer contains<input type="search" id="filter-text" placeholder="text"></label>
<label class="check"><input type="checkbox" id="filter-misaligned"> misaligned only</label>
<span id="sample-count"></span>
</div>
<div id="samples"></div>
<button id="show-more" type="button" hidden>show more</button>
</section>
<section id="config"><h2>Configuration</h2><pre class="config">{escape(config_text)}</pre></section>
</main>
<script type="application/json" id="report-data">{embed_json(_browser_data(rows, summary))}</script>
<script>{_JS}</script>
</body>
</html>
"""


def weak_judge(config: Mapping[str, Any], summary: Mapping[str, Any]) -> bool:
    """Whether no judge's scores should lead the report: the run was not judged, or its judge (the one
    that scored the rows, else the configured one) is one of :data:`WEAK_JUDGE_MODELS`."""
    if not summary.get("judged", True):
        return True
    run = summary.get("run") or {}
    raw = run.get("judge_info")
    info: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    model = info.get("model") or config_value(config, "judge.model", "judge_model")
    return model is not None and Path(str(model)).name in WEAK_JUDGE_MODELS


def plot_order(weak: bool) -> list[str]:
    """:data:`PLOT_FILES` in the report's order: the judge-free plots first when ``weak``."""
    if not weak:
        return list(PLOT_FILES)
    return [*MEASURE_PLOTS, *(name for name in PLOT_FILES if name not in MEASURE_PLOTS)]


def run(run: RunDir) -> Path:
    """The report stage: ``report.html`` of ``run`` from its config, rows, current ``summary.json``
    and plots (:func:`write_report`)."""
    return write_report(run.path)


def write_report(run_dir: PathLike) -> Path:
    """Write ``{run_dir}/report.html`` from the run directory's files and return its path: its
    config, rows, current ``summary.json`` and the ``plots/*.png`` there are (the report stage; the
    orchestrator's :func:`interp_playground.outputs.write_run_report` makes a missing summary and
    plots first).

    Raises:
        UserError: the run has no current ``summary.json``.
    """
    rd = RunDir.existing(run_dir)
    run = rd.path
    summary = current_summary(run)
    if summary is None:
        raise UserError(f"{run} has no current summary.json; `interp-playground report {run}` makes it first")
    config = rd.read_config()
    rows = load_run_rows(run, projections=False)  # each row's own projection is enough
    plot_dir = rd.plots_dir
    plots = {n: (plot_dir / n).read_bytes() for n in PLOT_FILES if (plot_dir / n).exists()}
    text = render_report(config, summary, rows, plots, title=f"EM evaluation {run.name}")
    return atomic_write_text(rd.report_path, text)


_agreement_table = agreement_table  # the name the judge-stage tests import

__all__ = ["REPORT_FILE", "embed_json", "plot_order", "render_report", "weak_judge", "write_report"]
