"""The report at the seed's grid (541 conditions): its summary table sorts by every column, filters by
transform / layer / alpha / op and keeps the top N by a difference to the baseline; at 1400 px the
demo-shaped report shows the measure columns without a sideways scroll and leads with the judge-free
plots when its judge is the demo's. Browser checks run in headless Chromium (skipped without it)."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from chromium_helpers import choose, open_page, show
from grid_rows import SEED_GRID, grid_rows
from interp_playground.demo import DemoOptions
from interp_playground.metrics import summarize
from interp_playground.rundir import PLOT_FILES
from interp_playground.stages.report import WEAK_JUDGE_MODELS, plot_order, render_report, weak_judge

DEMO_JUDGE = {"backend": "hf", "model": "smollm2-135m", "mode": "logprob"}

# the visible rows of the summary table: condition, data-v (or text) of every cell
VISIBLE = """Array.from(document.querySelectorAll('#summary-table tbody tr')).filter(function (tr) {
    return !tr.hidden; }).map(function (tr) { return {c: tr.getAttribute('data-condition'),
    v: Array.from(tr.cells).map(function (td) { var v = td.getAttribute('data-v');
        return v === null ? null : parseFloat(v); }),
    t: Array.from(tr.cells).map(function (td) { return td.textContent; })}; })"""


@pytest.fixture(scope="module")
def browser(seed):
    """One headless Chromium for the module, opened on the seed-grid report (1400 x 1000)."""
    with open_page(seed[0]) as b:
        yield b


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    rows = grid_rows(**SEED_GRID)
    summary = summarize(rows, n_bootstrap=20)
    start = time.perf_counter()
    text = render_report({}, summary, rows, {})
    seconds = time.perf_counter() - start
    path = tmp_path_factory.mktemp("seed") / "report.html"
    path.write_text(text, encoding="utf-8")
    return path, summary, seconds


@pytest.fixture
def seed_browser(browser, seed):
    """The browser on the seed-grid report with no filter and no top N (the tests leave no sort)."""
    if browser.js("location.href") != seed[0].resolve().as_uri():
        show(browser, seed[0])
    browser.js("""(function () {
        ['table-transform', 'table-layer', 'table-alpha', 'table-op', 'table-top'].forEach(function (id) {
            document.getElementById(id).value = ''; });
        document.getElementById('table-rank').value = 'd_aligned';
        document.getElementById('table-op').dispatchEvent(new Event('change'));
    })()""")
    return browser


def _set_top(b, n: str, rank: str) -> None:
    choose(b, "table-rank", rank)
    b.js(f"(function () {{ var e = document.getElementById('table-top'); e.value = {n!r};"
         " e.dispatchEvent(new Event('input')); })()")


def test_seed_report_renders_quickly_with_every_condition(seed):
    path, summary, seconds = seed
    assert len(summary["conditions"]) == 541
    assert seconds < 10  # linear work: 1,082 answers and 541 rows render in well under a second here
    assert path.read_text(encoding="utf-8").count("<tr data-condition=") == 541


# in the page: whether the visible steered rows are sorted by column j in direction d (missing last)
SORTED = """(function (j, d, numeric) {
    var rows = Array.from(document.querySelectorAll('#summary-table tbody tr')).filter(function (tr) {
        return !tr.hidden; });
    if (rows[0].getAttribute('data-condition') !== 'baseline') { return 'baseline not first'; }
    var prev = null, missing = false;
    for (var i = 1; i < rows.length; i++) {
        var td = rows[i].cells[j], v = td.getAttribute('data-v');
        if (numeric) {
            if (v === null) { missing = true; continue; }
            if (missing) { return 'a value after a missing one at row ' + i; }
            v = parseFloat(v);
            if (prev !== null && d * (v - prev) < 0) { return 'out of order at row ' + i; }
        } else {
            v = td.textContent;
            if (prev !== null && d * prev.localeCompare(v) > 0) { return 'out of order at row ' + i; }
        }
        prev = v;
    }
    return rows.length;
})"""


def test_every_column_sorts_both_ways_with_the_baseline_first(seed_browser):
    """Every column of the seed table (filtered to one layer: 15 conditions and the baseline), then
    two columns over all 541 rows."""
    b = seed_browser
    th = "document.querySelectorAll('#summary-table thead th')"
    keys = b.js(f"Array.from({th}).map(function (th) {{ return [th.getAttribute('data-key'), "
                "th.getAttribute('data-type')]; })")
    assert len(keys) == 5 + 9 + 7
    for layer, columns, n_rows in (("9", range(len(keys)), 16), ("", (6, 0), 541)):
        choose(b, "table-layer", layer)
        order = b.js(f"{VISIBLE}.map(function (r) {{ return r.c; }})")
        for j in columns:
            numeric = str(keys[j][1] == "num").lower()
            for direction, aria in ((1, "ascending"), (-1, "descending")):
                got = b.js(f"(function () {{ {th}[{j}].click(); return [{SORTED}({j}, {direction}, {numeric}), "
                           f"{th}[{j}].getAttribute('aria-sort')]; }})()")
                assert got == [n_rows, aria], (keys[j], direction)
            assert b.js(f"(function () {{ {th}[{j}].click(); return {VISIBLE}.map(function (r) {{ return r.c; }}); "
                        "})()") == order  # a third click: the run's order again


def test_filters_by_transform_layer_alpha_and_op(seed_browser):
    b = seed_browser
    choose(b, "table-transform", "overfit")
    choose(b, "table-layer", "15")
    rows = b.js(VISIBLE)
    assert [r["c"] for r in rows] == ["baseline"] + [f"overfit_layer_15_alpha_{a}" for a in SEED_GRID["alphas"]]
    choose(b, "table-alpha", "-2")
    assert [r["c"] for r in b.js(VISIBLE)] == ["baseline", "overfit_layer_15_alpha_-2.0"]
    assert b.js("document.getElementById('table-count').textContent") == "1 of 540 steered conditions + baseline"
    for sel in ("table-transform", "table-layer", "table-alpha"):
        choose(b, sel, "")
    choose(b, "table-op", "add")
    assert len(b.js(VISIBLE)) == 541
    choose(b, "table-op", "")


@pytest.mark.parametrize("rank, delta", [("d_aligned", "aligned_mean"), ("d_nll", "nll_mean"),
                                         ("d_projection", "projection_mean")])
def test_top_n_keeps_the_conditions_furthest_from_the_baseline(seed, seed_browser, rank, delta):
    b, summary = seed_browser, seed[1]
    steered = [c for name, c in summary["conditions"].items() if name != "baseline"]
    want = sorted(steered, key=lambda c: -abs(c["vs_baseline"][delta]))
    _set_top(b, "10", rank)
    assert [r["c"] for r in b.js(VISIBLE)] == ["baseline"] + [c["condition"] for c in want[:10]]
    choose(b, "table-transform", "default")  # the top N of what the filters keep
    assert [r["c"] for r in b.js(VISIBLE)][1:] == [c["condition"] for c in want
                                                    if c["transform"] == "default"][:10]
    choose(b, "table-transform", "")
    _set_top(b, "", rank)
    assert len(b.js(VISIBLE)) == 541


def test_a_judge_free_report_ranks_by_the_measures(browser, tmp_path):
    rows = grid_rows(("default",), (3, 4), (-1.0, 1.0), judged=False)
    summary = summarize(rows, n_bootstrap=0)
    assert not summary["judged"] and summary["measured"]
    path = tmp_path / "free.html"
    path.write_text(render_report({}, summary, rows, {}), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert 'data-key="aligned"' not in text and 'data-key="d_nll"' in text
    show(browser, path)
    ranks = browser.js("Array.from(document.getElementById('table-rank').options).map(function (o) { return o.value; })")
    assert ranks == ["d_nll", "d_projection"]


def test_which_runs_lead_with_the_judge_free_plots():
    assert DemoOptions().judge_model in WEAK_JUDGE_MODELS
    judged = {"judged": True, "run": {"judge_info": DEMO_JUDGE}}
    assert weak_judge({}, judged)
    assert weak_judge({"judge": DEMO_JUDGE}, {"judged": True})
    assert not weak_judge({"judge": {"backend": "openai", "model": "gpt-4o-mini"}}, {"judged": True})
    real = {"judged": True, "run": {"judge_info": {"backend": "openai", "model": "gpt-4o-mini"}}}
    assert not weak_judge({"judge": DEMO_JUDGE}, real)  # the judge that scored the rows decides
    assert weak_judge({}, {"judged": False})
    assert plot_order(False) == list(PLOT_FILES)
    assert plot_order(True)[:2] == ["fluency_by_alpha.png", "projection_by_alpha.png"]
    assert sorted(plot_order(True)) == sorted(PLOT_FILES)


def test_demo_report_at_1400px_shows_the_measures_without_scrolling_sideways(browser, tmp_path):
    rows = grid_rows(("default",), (15,), (-4.0, -2.0, 0.0, 2.0), n_answers=8)
    summary = summarize(rows, n_bootstrap=50, metadata={"judge": "hf smollm2-135m (logprob)",
                                                         "judge_info": DEMO_JUDGE})
    blank = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(blank, format="PNG")  # the plots' order is what matters here
    plots = dict.fromkeys(PLOT_FILES, blank.getvalue())
    path = tmp_path / "report.html"
    config = {"model": "smollm2-135m", "judge": DEMO_JUDGE}
    path.write_text(render_report(config, summary, rows, plots), encoding="utf-8")
    show(browser, path)
    b = browser
    assert b.js("window.innerWidth") == 1400
    assert b.js("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    wrap = b.js("(function (w) { return [w.scrollWidth, w.clientWidth]; })"
                "(document.querySelector('#summary .table-wrap'))")
    assert wrap[0] <= wrap[1], wrap
    for key in ("nll", "d_nll", "repetition", "projection", "d_projection", "aligned", "d_aligned"):
        right = b.js(f"document.querySelector('#summary-table th[data-key={key}]').getBoundingClientRect().right")
        assert 0 < right <= 1400, key
    figures = b.js("Array.from(document.querySelectorAll('#plots figure')).map(function (f) { return f.id; })")
    assert figures[:2] == ["plot-fluency_by_alpha", "plot-projection_by_alpha"]
    assert len(figures) == len(PLOT_FILES)
    assert "demo's 135M model" in b.js("document.querySelector('#plots .note').textContent")


def test_rows_carry_their_condition_for_the_filters():
    """Each summary row's data attributes: an ablation has no alpha and op "ablate", two layers read "0+2"."""
    import re

    from interp_playground.conditions import Condition

    conds = [Condition(), Condition("v.hack", (3,), -1.5), Condition("v.hack", (0, 2), 2.0),
             Condition("v.hack", (3,), op="ablate")]
    rows = [{"condition": c.stem, "steering": c.to_dict(), "question_id": 0, "answer_idx": 0, "question": "q",
             "response": "r", "aligned_score": 80.0, "coherent_score": 90.0} for c in conds]
    text = render_report({}, summarize(rows), rows, {})
    attrs = dict(re.findall(r'<tr data-condition="([^"]*)" (data-transform="[^>]*")', text))
    assert attrs == {
        "baseline": 'data-transform="" data-layer="" data-alpha="" data-op=""',
        conds[1].stem: 'data-transform="v.hack" data-layer="3" data-alpha="-1.5" data-op="add"',
        conds[2].stem: 'data-transform="v.hack" data-layer="0+2" data-alpha="2" data-op="add"',
        conds[3].stem: 'data-transform="v.hack" data-layer="3" data-alpha="" data-op="ablate"',
    }
