"""tools/check_imports.py: the layering check that `make lint` runs over the package."""

import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_imports.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("check_imports", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "src" / "interp_playground"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "src"


def test_the_package_itself_is_clean(tool):
    assert tool.problems(TOOL.parent.parent / "src") == []


def test_upward_import_inside_a_function_is_found(tool, tmp_path):
    src = _package(tmp_path, {"errors.py": "def f():\n    from .pipeline import run\n", "pipeline.py": "run = 1\n"})
    found = tool.problems(src)
    assert len(found) == 1 and "errors (values) imports pipeline (orchestration), a level above" in found[0]
    assert found[0].endswith("a level above") and "errors.py:2" in found[0]


def test_circle_and_stage_to_stage_are_found(tool, tmp_path):
    src = _package(tmp_path, {
        "stages/__init__.py": "",
        "stages/plots.py": "from .summarize import x\n",
        "stages/summarize.py": "x = 1\nfrom . import plots\n",
        "stages/report.py": "from .report_table import page\n",  # one stage's two modules: fine
        "stages/report_table.py": "page = 1\n",
    })
    found = tool.problems(src)
    assert "import circle: stages.plots <-> stages.summarize" in found
    assert sum("stage plots imports stage summarize" in line for line in found) == 1
    assert sum("stage summarize imports stage plots" in line for line in found) == 1
    assert len(found) == 3


def test_a_module_without_a_level_is_named(tool, tmp_path):
    src = _package(tmp_path, {"mystery.py": ""})
    assert tool.problems(src) == [f"{src / 'interp_playground' / 'mystery.py'}: module 'mystery' has no level "
                                  "in tools/check_imports.py LEVELS"]


def test_imports_for_annotations_only_do_not_count(tool, tmp_path):
    src = _package(tmp_path, {
        "errors.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .pipeline import run\n",
        "pipeline.py": "from . import errors\nrun = 1\n",
    })
    assert tool.problems(src) == []


_JUDGE = '_EXPORTS: dict[str, str] = {"make_x": "setup", "score": "scoring", "Settings": "..settings.judge:JudgeSettings"}\n'


def test_a_lazy_export_counts_as_an_import_of_its_submodule(tool, tmp_path):
    src = _package(tmp_path, {
        "errors.py": "from .judge import make_x\n",
        "judge/__init__.py": _JUDGE,
        "judge/setup.py": "make_x = 1\n",
        "judge/scoring.py": "score = 1\n",
    })
    found = tool.problems(src)
    assert len(found) == 1 and "errors (values) imports judge.setup (infrastructure), a level above" in found[0]


def test_a_lazy_export_at_the_same_level_and_an_unknown_name_are_fine(tool, tmp_path):
    src = _package(tmp_path, {
        "errors.py": "from .judge import score, Settings, not_exported\n",
        "judge/__init__.py": _JUDGE,
        "judge/setup.py": "make_x = 1\n",
        "judge/scoring.py": "score = 1\n",
        "settings/__init__.py": "",
        "settings/judge.py": "JudgeSettings = 1\n",
    })
    assert tool.problems(src) == []
    known = {"", "errors", "judge", "judge.setup", "judge.scoring", "settings", "settings.judge"}
    exports = {"judge": tool.exports_of(src / "interp_playground" / "judge" / "__init__.py")}
    assert set(tool.imports_of(src / "interp_playground" / "errors.py", "errors", known, exports)) == {
        "judge.scoring", "settings.judge", "judge"}


def test_a_submodule_is_still_itself_and_exports_chain_through_packages(tool, tmp_path):
    src = _package(tmp_path, {
        "__init__.py": '_EXPORTS = {"make_x": "judge", "page": "outputs:write_page"}\n',
        "rundir.py": "from .judge import setup\n",
        "errors.py": "def f():\n    from interp_playground import make_x, page\n",
        "outputs.py": "write_page = 1\n",
        "judge/__init__.py": _JUDGE,
        "judge/setup.py": "make_x = 1\n",
        "judge/scoring.py": "score = 1\n",
    })
    found = tool.problems(src)
    assert sum("rundir (values) imports judge.setup (infrastructure)" in line for line in found) == 1
    assert sum("errors (values) imports judge.setup (infrastructure)" in line for line in found) == 1
    assert sum("errors (values) imports outputs (orchestration)" in line and "errors.py:2" in line
               for line in found) == 1
    assert len(found) == 3
