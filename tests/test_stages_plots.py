"""The PNGs (the six seed plots and the two measure plots): written from a run directory's files alone,
valid, reproducible, and robust to degenerate runs (one condition, baseline only, no numeric score,
no judge scores, no measures)."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from interp_playground.errors import UserError
from interp_playground.metrics import summarize
from interp_playground.outputs import make_run_plots as make_plots_from_run_dir
from interp_playground.rows.reader import load_judged_rows
from interp_playground.rundir import PLOT_FILES
from interp_playground.stages.plots import make_plots
from run_dir_factory import make_fake_run_dir

SEED_PLOTS = {
    "scores_by_condition.png",
    "score_distributions.png",
    "alignment_vs_coherence.png",
    "alignment_by_layer_transform.png",
    "coherence_by_layer_transform.png",
    "alignment_heatmap.png",
}
MEASURE_PLOTS = {"fluency_by_alpha.png", "projection_by_alpha.png"}


def _check_pngs(paths, plot_dir):
    assert [p.name for p in paths] == list(PLOT_FILES)
    assert set(PLOT_FILES) == SEED_PLOTS | MEASURE_PLOTS
    assert {p.name for p in plot_dir.iterdir()} == set(PLOT_FILES)  # exactly these, no temp files
    for p in paths:
        assert p.parent == plot_dir
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG"
            assert im.width >= 500 and im.height >= 300
            # not a blank canvas: a real plot has many distinct colours
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 20


def _digests(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_plots_from_run_dir_are_valid_reproducible_and_follow_the_data(tmp_path):
    run = make_fake_run_dir(tmp_path / "a", n_questions=3, n_generations=2, seed=1)
    paths = make_plots_from_run_dir(run)  # no summary.json yet: computed from the judged files
    _check_pngs(paths, run / "plots")
    first = _digests(paths)
    assert _digests(make_plots_from_run_dir(run)) == first  # same files, same pictures
    other = make_fake_run_dir(tmp_path / "b", n_questions=3, n_generations=2, seed=2)
    changed = _digests(make_plots_from_run_dir(other))
    assert all(first[name] != changed[name] for name in SEED_PLOTS)  # no measures: those two say so


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(transforms=("overfit",), layers=(15,), alphas=(-2.0,)),
        dict(transforms=(), layers=(), alphas=()),
        dict(all_none=True, transforms=("default",), layers=(3, 7), alphas=(1.0,)),
        dict(include_baseline=False, transforms=("default", "overfit"), layers=(5,), alphas=(0.0, 2.0)),
    ],
    ids=["one-condition", "baseline-only", "all-none", "no-baseline"],
)
def test_degenerate_runs_still_give_six_plots(tmp_path, kwargs):
    run = make_fake_run_dir(tmp_path, n_questions=2, n_generations=2, **kwargs)
    _check_pngs(make_plots_from_run_dir(run), run / "plots")


def test_rows_and_summary_pair(tmp_path):
    run = make_fake_run_dir(tmp_path, transforms=("default",), layers=(1, 2), alphas=(-1.0, 1.0),
                            n_questions=2, n_generations=1)
    rows = load_judged_rows(run)
    summary = summarize(rows, n_bootstrap=20)
    out = tmp_path / "elsewhere"
    paths = make_plots((rows, summary), out, {"model": "m", "judge": "j"})
    _check_pngs(paths, out)
    with pytest.raises(UserError, match="out_dir"):
        make_plots((rows, summary))
    with pytest.raises(UserError, match="conditions"):
        make_plots((rows, {"not": "a summary"}), out)


def test_missing_run_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        make_plots_from_run_dir(tmp_path / "missing")


def test_plots_and_report_of_a_run_with_ablations(tmp_path):
    """Defect: ``report`` and ``plots`` crashed (TypeError on a None alpha) on a run with ``--ablate``."""
    import json

    from interp_playground.conditions import Condition
    from interp_playground.outputs import write_run_report as write_report

    run = make_fake_run_dir(tmp_path, n_questions=2, n_generations=2)
    source = json.loads((run / "judged_overfit_layer_10_alpha_1.0.json").read_text())
    for layers in ((10,), (10, 20)):
        cond = Condition("overfit", layers, op="ablate")
        rows = [{**r, "condition": cond.stem, "steering": cond.to_dict(), "steering_layer": cond.steering_layer,
                 "steering_strength": 0.0} for r in source]
        (run / f"judged_{cond.stem}.json").write_text(json.dumps(rows))
    _check_pngs(make_plots_from_run_dir(run), run / "plots")
    report = write_report(run).read_text()
    assert "overfit_layer_10_ablate" in report and "overfit_layer_10-20_ablate" in report
    from interp_playground.stages.summarize import load_or_summarize

    summary = load_or_summarize(run)
    ablation = summary["conditions"]["overfit_layer_10-20_ablate"]
    assert ablation["alpha"] is None and ablation["op"] == "ablate" and ablation["layers"] == [10, 20]
    assert ablation["steering"] == Condition("overfit", (10, 20), op="ablate").to_dict()


def test_measure_plots_follow_the_measures_with_and_without_judge_scores(tmp_path):
    from interp_playground.stages.summarize import load_or_summarize
    from run_dir_factory import add_fake_measures

    run = make_fake_run_dir(tmp_path / "a", n_questions=3, n_generations=2, seed=1)
    before = _digests(make_plots_from_run_dir(run))
    add_fake_measures(run)
    judged = make_plots_from_run_dir(run)  # the measures are newer than summary.json: recomputed
    _check_pngs(judged, run / "plots")
    after = _digests(judged)
    assert all(before[name] != after[name] for name in MEASURE_PLOTS)
    assert load_or_summarize(run)["measured"]
    # judge-free: the same run without its judged files still gives every plot
    for p in run.glob("judged_*"):
        p.unlink()
    (run / "summary.json").unlink()
    free = make_plots_from_run_dir(run)
    _check_pngs(free, run / "plots")
    assert not load_or_summarize(run)["judged"]


class _Layouts:
    """Every figure saved while active: each visible axes' size as a share of its figure (after the
    layout ran in ``savefig``; colour bars left out) and each legend's number of entries."""

    def __init__(self, monkeypatch):
        from matplotlib.figure import Figure

        self.figures: list[dict] = []
        original = Figure.savefig

        def savefig(fig, *args, **kwargs):
            out = original(fig, *args, **kwargs)
            axes = [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]
            legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend() is not None)]
            self.figures.append({
                "title": fig._suptitle.get_text().split("\n")[0] if fig._suptitle else "",
                "axes": [(ax.get_position().width, ax.get_position().height) for ax in axes],
                "legends": [len(legend.get_texts()) for legend in legends],
            })
            return out

        monkeypatch.setattr(Figure, "savefig", savefig)

    def check(self, n_figures: int) -> None:
        assert len(self.figures) == n_figures
        for fig in self.figures:
            assert fig["axes"], fig["title"]
            for width, height in fig["axes"]:
                assert width >= 0.1 and height >= 0.1, (fig["title"], width, height)
            assert all(n <= 15 for n in fig["legends"]), (fig["title"], fig["legends"])


@pytest.mark.parametrize("grid", ["seed", "demo"])
def test_every_plot_reads_at_the_seed_grid_and_at_one_layer(tmp_path, monkeypatch, recwarn, grid):
    """Issue 20: 36 layers x 5 alphas x 3 transforms (+ baseline, judged) and the demo's one layer:
    no axes below a tenth of its figure, no legend over 15 entries, in every PNG and the vector plot."""
    import torch

    from grid_rows import SEED_GRID, grid_rows
    from interp_playground.stages.vector_plots import plot_diagnostics
    from interp_playground.vector_file import SteeringVectors

    shape = SEED_GRID if grid == "seed" else {"transforms": ("default",), "layers": (15,),
                                              "alphas": (-4.0, -2.0, 0.0, 2.0)}
    rows = grid_rows(**shape)
    summary = summarize(rows, n_bootstrap=20)
    layouts = _Layouts(monkeypatch)
    paths = make_plots((rows, summary), tmp_path / "plots", {"model": "m", "judge": "j"})
    _check_pngs(paths, tmp_path / "plots")
    n_layers = 36 if grid == "seed" else 1
    vectors = {}
    for i, name in enumerate(shape["transforms"]):
        g = torch.Generator().manual_seed(i)
        control, hack = torch.randn(n_layers, 8, generator=g), torch.randn(n_layers, 8, generator=g)
        meta = {"name": name, "residual_norm": {"control": [1.0] * n_layers, "school_of_reward_hacks": [2.0] * n_layers}}
        vectors[name] = SteeringVectors(control - hack, meta, {"control": control, "school_of_reward_hacks": hack})
    plot_diagnostics(vectors, tmp_path / "diag.png")
    layouts.check(len(PLOT_FILES) + 1)
    assert not [w for w in recwarn if "collapsed" in str(w.message)]


def test_the_plots_stage_alone_reads_a_current_summary_and_never_makes_one(tmp_path):
    """plots.make_plots on a run directory is the stage alone: it refuses a run whose summary.json is
    missing (the orchestrator, outputs.make_run_plots, makes it first) and writes nothing."""
    from interp_playground.errors import UserError
    from interp_playground.stages.summarize import summarize_run

    run = make_fake_run_dir(tmp_path / "a", n_questions=2, n_generations=1, seed=3)
    with pytest.raises(UserError, match="no current summary.json"):
        make_plots(run)
    assert not (run / "summary.json").exists() and not (run / "plots").exists()
    summarize_run(run)
    assert _digests(make_plots(run)) == _digests(make_plots_from_run_dir(run))  # stage == orchestrated
