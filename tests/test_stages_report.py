"""report.html: one self-contained, offline page whose untrusted answers are shown as text.

The static checks read the HTML; the browser checks open it in headless Chromium, driven over the
Chrome DevTools Protocol with ``websocket-client`` (skipped when ``/usr/bin/chromium`` is absent).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from chromium_helpers import Chromium, choose, open_page
from interp_playground.errors import UserError
from interp_playground.outputs import write_run_report as write_report
from interp_playground.rows.reader import load_judged_rows
from interp_playground.rundir import PLOT_FILES
from interp_playground.stages.report import embed_json, render_report
from interp_playground.stages.summarize import load_or_summarize
from run_dir_factory import NASTY_ANSWERS, make_fake_run_dir

N_QUESTIONS, N_GENERATIONS = 4, 2
N_CONDITIONS = 1 + 2 * 2 * 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = make_fake_run_dir(tmp_path_factory.mktemp("report"), n_questions=N_QUESTIONS,
                            n_generations=N_GENERATIONS)
    write_report(run)  # no plots yet: write_report draws them first
    return run


@pytest.fixture(scope="module")
def page_html(run_dir) -> str:
    return (run_dir / "report.html").read_text(encoding="utf-8")


# --- static checks ----------------------------------------------------------------------------


def test_embed_json_round_trips_and_hides_markup():
    value = {"a": NASTY_ANSWERS, "b": "x\u2028y\u2029z", "c": [1, 2.5, None, True]}
    text = embed_json(value)
    assert json.loads(text) == value
    for ch in "<>&\u2028\u2029":
        assert ch not in text


def test_report_is_one_self_contained_file(run_dir, page_html):
    assert (run_dir / "plots").is_dir() and len(list((run_dir / "plots").glob("*.png"))) == len(PLOT_FILES)
    imgs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page_html)
    assert len(imgs) == len(PLOT_FILES)
    for src, name in zip(imgs, PLOT_FILES, strict=False):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (run_dir / "plots" / name).read_bytes()
    # nothing is fetched from anywhere: no external src/href, no stylesheet or script links
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page_html, re.I)
    assert "<link" not in page_html.lower()
    assert re.search(r"<script\s+src", page_html, re.I) is None
    assert "@import" not in page_html and "url(" not in page_html


def test_csp_allows_only_the_pages_own_script(page_html):
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page_html).group(1)
    assert "default-src &#x27;none&#x27;" in csp
    scripts = re.findall(r"<script>(.*?)</script>", page_html, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode("utf-8")).digest()).decode()
    assert f"sha256-{digest}" in csp


def test_untrusted_strings_are_escaped_in_the_html(page_html):
    # the only raw <script tags are the data block and the page's own script
    assert len(re.findall(r"<script\b", page_html, re.I)) == 2
    assert "</script><script>window.pwned" not in page_html
    assert "<img src=x" not in page_html
    assert "window.pwned" in page_html  # present, but only as escaped data
    assert "<b>bold</b>" not in page_html
    # the config's note is HTML-escaped in the configuration block
    assert "&lt;script&gt;window.pwned=&#x27;config&#x27;&lt;/script&gt;" in page_html
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page_html, re.S)
    payload = json.loads(data.group(1))
    responses = {r["response"] for r in payload["rows"]}
    assert set(NASTY_ANSWERS[:3]) <= responses  # the exact text survives the round trip
    assert len(payload["rows"]) == N_CONDITIONS * N_QUESTIONS * N_GENERATIONS


def test_render_report_without_plots_or_config(run_dir):
    rows = load_judged_rows(run_dir)
    text = render_report({}, load_or_summarize(run_dir), rows, {}, title="<t>")
    assert "<title>&lt;t&gt;" in text
    assert text.count("not available") == len(PLOT_FILES)


def _payload(text: str) -> dict:
    """The answer browser's data, its compact rows expanded as the page's script does: the condition
    from its index, fields left out as None."""
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    payload = json.loads(data.group(1))
    fields = ("aligned", "coherent", "nll", "repetition", "projection", "aligned_reason", "n_tokens")
    payload["rows"] = [{**dict.fromkeys(fields), **r, "condition": payload["conditions"][r["c"]]}
                       for r in payload["rows"]]
    return payload


def test_report_with_measures_with_and_without_judge_scores(tmp_path):
    from run_dir_factory import add_fake_measures

    run = make_fake_run_dir(tmp_path, transforms=("default",), layers=(3,), alphas=(-1.0, 1.0), n_questions=2,
                            n_generations=2)
    plain = write_report(run).read_text(encoding="utf-8")
    assert 'data-key="nll"' not in plain  # no measures: the table is the seed's
    measured = add_fake_measures(run)
    text = write_report(run).read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text())
    stem = "default_layer_3_alpha_1.0"
    cond = summary["conditions"][stem]
    for key, header in (("nll", "NLL"), ("d_nll", "Δ NLL"), ("repetition", "repe&shy;tition"),
                        ("projection", "projec&shy;tion"), ("baseline_projection", "base&shy;line on it")):
        assert re.search(f'<th data-key="{key}" data-type="num" title="[^"]*click to sort">{header}</th>', text)
    assert f'{cond["nll"]["mean"]:.2f}' in text and f'{cond["projection"]["baseline_mean"]:.2f}' in text
    rows = {(r["condition"], r["question_id"], r["answer_idx"]): r for r in _payload(text)["rows"]}
    for m in measured[stem]:
        r = rows[(stem, m["question_id"], m["answer_idx"])]
        def shown(x: float) -> float:  # the page carries 7 significant digits
            return float(f"{x:.7g}")

        assert r["nll"] == shown(m["nll"]) and r["repetition"] == shown(m["repetition"])
        assert r["projection"] == shown(m["projections"]["default@3"])
    assert _payload(text)["judged"] is True
    assert "fluency_by_alpha.png" in text and "projection_by_alpha.png" in text
    assert "not available" not in text
    # judge-free: no judged files, the report is made from the generations and their measures
    for p in run.glob("judged_*"):
        p.unlink()
    (run / "summary.json").unlink()
    free = write_report(run).read_text(encoding="utf-8")
    payload = _payload(free)
    assert payload["judged"] is False and "answers (not judged)" in free
    assert all(r["aligned"] is None and r["nll"] is not None for r in payload["rows"])
    assert 'data-key="nll"' in free and "not available" not in free
    assert 'data-key="aligned"' not in free  # no judge: no judge columns


def test_missing_run_dir(tmp_path):
    with pytest.raises(UserError):
        write_report(tmp_path / "missing")


# --- headless Chromium ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(run_dir):
    with open_page(run_dir / "report.html") as b:
        yield b


_choose = choose


def _cards(b: Chromium) -> list[dict]:
    return b.js("""Array.from(document.querySelectorAll('#samples .sample')).map(function (e) {
        return {condition: e.getAttribute('data-condition'), question: e.getAttribute('data-question'),
                response: e.querySelector('pre.response').textContent,
                qtext: e.querySelector('.question').textContent,
                badges: Array.from(e.querySelectorAll('.badge')).map(function (x) { return x.textContent; })};
    })""")


def test_page_opens_with_summary_plots_and_answers(browser):
    b = browser
    assert b.js("typeof window.pwned") == "undefined"
    rows = b.js("Array.from(document.querySelectorAll('#summary-table tbody tr')).map("
                "function (r) { return r.cells[0].textContent; })")
    assert len(rows) == N_CONDITIONS
    assert rows[0] == "baseline"
    loaded = b.js("Array.from(document.querySelectorAll('figure img')).map("
                  "function (i) { return i.complete ? i.naturalWidth : 0; })")
    assert len(loaded) == len(PLOT_FILES) and all(w > 400 for w in loaded)
    assert len(_cards(b)) == min(100, N_CONDITIONS * N_QUESTIONS * N_GENERATIONS)
    shot = base64.b64decode(b.call("Page.captureScreenshot", format="png")["data"])
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_condition_filter_shows_only_that_condition(browser):
    b = browser
    cond = "overfit_layer_20_alpha_-1.0"
    _choose(b, "filter-condition", cond)
    cards = _cards(b)
    assert len(cards) == N_QUESTIONS * N_GENERATIONS
    assert {c["condition"] for c in cards} == {cond}
    assert b.js("document.getElementById('sample-count').textContent").startswith(f"{len(cards)} of ")
    _choose(b, "filter-condition", "")


def test_question_filter_and_sort_by_score(browser):
    b = browser
    _choose(b, "filter-question", "1")
    cards = _cards(b)
    assert len(cards) == N_CONDITIONS * N_GENERATIONS
    assert {c["question"] for c in cards} == {"1"}
    assert {c["qtext"] for c in cards} == {'What do you <really> think of "humans" & AI?'}
    _choose(b, "filter-question", "")

    _choose(b, "sort", "aligned-asc")
    labels = [next(x for x in c["badges"] if x.startswith("aligned ")) for c in _cards(b)]
    values = [float(x.split()[1]) for x in labels if re.fullmatch(r"aligned -?[\d.]+", x)]
    assert values == sorted(values) and len(values) > 10
    first_non_numeric = next(i for i, x in enumerate(labels) if not re.fullmatch(r"aligned -?[\d.]+", x))
    assert all(not re.fullmatch(r"aligned -?[\d.]+", x) for x in labels[first_non_numeric:])
    _choose(b, "sort", "id")


def test_clicking_a_summary_row_filters_the_answers(browser):
    b = browser
    b.js("document.querySelector('#summary-table tbody tr[data-condition=\"default_layer_10_alpha_1.0\"]').click()")
    assert b.js("document.getElementById('filter-condition').value") == "default_layer_10_alpha_1.0"
    assert {c["condition"] for c in _cards(b)} == {"default_layer_10_alpha_1.0"}
    _choose(b, "filter-condition", "")


def test_script_bearing_answers_show_as_text_and_never_run(browser):
    b = browser
    _choose(b, "filter-condition", "baseline")
    shown = [c["response"] for c in _cards(b)]
    for nasty in NASTY_ANSWERS[:4]:
        assert nasty in shown
    assert b.js("document.querySelectorAll('#samples img, #samples script, #samples b').length") == 0
    assert b.js("typeof window.pwned") == "undefined"
    _choose(b, "filter-condition", "")


def test_escaping_alone_keeps_scripts_inert(browser, run_dir, tmp_path):
    """Without the Content-Security-Policy the answers still never run: escaping does the work."""
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    no_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    assert no_csp != page
    target = tmp_path / "report_no_csp.html"
    target.write_text(no_csp, encoding="utf-8")
    url = target.resolve().as_uri()
    browser.call("Page.navigate", url=url)
    browser.wait_ready(url)
    assert browser.js("typeof window.pwned") == "undefined"
    assert browser.js("document.querySelectorAll('#samples img').length") == 0
    _choose(browser, "filter-condition", "baseline")
    assert NASTY_ANSWERS[1] in [c["response"] for c in _cards(browser)]


def test_a_condition_on_two_layers_shows_both_layers_not_a_range():
    """Review finding: ``--layers 0+2`` showed "—" in the layer column, leaving only the stem
    ``..._layer_0-2_...``, which the CLI reads as the range 0, 1, 2."""
    from interp_playground.conditions import Condition
    from interp_playground.metrics import summarize

    cond = Condition("default", (0, 2), 2.0)
    rows = [{"condition": stem, "question_id": 0, "answer_idx": 0, "question": "q", "response": "r",
             "aligned_score": 80.0, "coherent_score": 90.0} for stem in ("baseline", cond.stem)]
    text = render_report({}, summarize(rows), rows, {})
    row = re.search(rf'<tr data-condition="{cond.stem}"[^>]*>(.*?)</tr>', text, re.S)
    assert row is not None and '<td data-v="0.0">0+2</td>' in row.group(1)
    assert 'data-layer="0+2"' in row.group(0)


def test_the_report_stage_alone_refuses_a_run_without_a_current_summary(tmp_path):
    from interp_playground.stages import report

    run = make_fake_run_dir(tmp_path / "r", n_questions=2, n_generations=1)
    with pytest.raises(UserError, match="no current summary.json"):
        report.write_report(run)
    assert not (run / "summary.json").exists() and not (run / "report.html").exists()
