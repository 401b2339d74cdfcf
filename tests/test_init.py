"""The public API (``interp_playground/__init__.py`` and the judge package's): every name resolves,
and importing the package stays cheap (no torch until a name needs it)."""

from __future__ import annotations

import subprocess
import sys

import interp_playground as ip
from interp_playground import judge


def test_every_public_name_resolves_to_the_object_its_module_defines():
    for name in ip.__all__:
        value = getattr(ip, name)
        if name != "__version__":
            assert getattr(value, "__name__", name) == name or not callable(value) or name == "write_report"
    assert ip.write_report.__module__ == "interp_playground.outputs"  # the orchestrated report (summary, plots first)
    assert sorted(dir(ip)) == sorted(ip.__all__)


def test_every_name_of_the_judge_package_resolves():
    for name in judge.__all__:
        assert getattr(judge, name) is not None
    assert judge.make_backend.__module__ == "interp_playground.judge.backends"
    assert judge.JudgeSettings.__module__ == "interp_playground.settings.judge"


def test_an_unknown_name_is_an_attribute_error():
    for package in (ip, judge):
        try:
            package.no_such_name  # noqa: B018
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError(f"{package.__name__}.no_such_name resolved")


def test_importing_the_package_and_its_settings_loads_no_torch():
    code = ("import sys, interp_playground, interp_playground.judge, interp_playground.settings.eval; "
            "print('torch' in sys.modules, 'openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
