"""The settings of a whole evaluation run: one settings object per stage, as ``config.json`` stores them,
and the rules of ``--resume``.

The orchestrator (:func:`interp_playground.pipeline.run_eval`) and the single-stage commands read a run's
settings back through :class:`EvalConfig`; each stage gets its own section. :meth:`EvalConfig.resumed`
is what ``eval --resume`` may change of a stored run's settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from . import GenerationSettings, GridSettings, MeasuresSettings, MetricsSettings, ModelSettings, Settings
from .judge import JudgeSettings

_SECTIONS: dict[str, type[Settings]] = {
    "model": ModelSettings, "grid": GridSettings, "generation": GenerationSettings, "judge": JudgeSettings,
    "metrics": MetricsSettings, "measures": MeasuresSettings,
}
# a flat keyword (a field's option destination: ``judge_model``, ``measures_batch_size``, or its name)
# -> (section, field); the first section that has it wins (``batch_size`` is the generation's)
_FLAT: dict[str, tuple[str, str]] = {}
for _section, _kind in _SECTIONS.items():
    for _f in _kind.__dataclass_fields__.values():  # type: ignore[attr-defined]
        _FLAT.setdefault(_f.metadata.get("dest") or _f.name, (_section, _f.name))

#: Settings a resumed run may change although their section fixes the answers: they do not change them.
FREE_ON_RESUME = frozenset({("model", "device"), ("model", "device_map"), ("generation", "batch_size"),
                            ("generation", "engine")})
#: The sections that determine what was generated (a resume may not change them).
GENERATED_BY = ("model", "grid", "generation")


def _norm(value: Any) -> Any:
    """A setting in a comparable form: numbers (or numeric strings) as floats, lists element-wise."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value).strip()


@dataclass
class EvalConfig:
    """Everything that defines an evaluation run: one settings object per stage.

    ``config.json`` stores it as ``{"model": {...}, "grid": {...}, "generation": {...}, "judge": {...},
    "metrics": {...}, "measures": {...}}``; :meth:`from_dict` also reads the flat layout of runs made
    before that, and configs without a section (``measures``: runs made before it was recorded) get
    that section's defaults. :meth:`build` takes flat keyword arguments
    (``EvalConfig.build(model="smollm2-135m", layers=[3])``).
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    grid: GridSettings = field(default_factory=GridSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    measures: MeasuresSettings = field(default_factory=MeasuresSettings)

    def to_dict(self) -> dict[str, Any]:
        """Nested JSON-ready dict, one key per stage."""
        return {name: getattr(self, name).to_dict() for name in _SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        """From :meth:`to_dict`'s layout or the flat layout of schema-1 runs."""
        if isinstance(data.get("grid"), Mapping):
            return cls._of(data)
        return cls.build(**data)

    @classmethod
    def _of(cls, sections: Mapping[str, Any]) -> EvalConfig:
        return cls(**{name: kind.from_dict(sections.get(name)) for name, kind in _SECTIONS.items()})  # type: ignore[arg-type]

    @classmethod
    def build(cls, **flat: Any) -> EvalConfig:
        """From flat keyword arguments: any field of any section, by its option destination where it
        has one (``judge_model``, ``measures_batch_size``), else by its name."""
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for key, value in flat.items():
            if key in _FLAT:
                section, name = _FLAT[key]
                sections[section][name] = value
        return cls._of(sections)

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: EvalConfig | None = None) -> EvalConfig:
        """``base`` (default: the defaults) with every section's options present in ``args`` laid over it."""
        base = base if base is not None else cls()
        return cls(**{name: kind.from_args(args, getattr(base, name))  # type: ignore[arg-type]
                      for name, kind in _SECTIONS.items()})

    def resumed(self, args: argparse.Namespace, *, run_dir: Any, overwrite: bool = False,
                skip_generation: bool = False) -> EvalConfig:
        """The config of ``--resume run_dir`` (``self``: its stored config) with the options of ``args``.

        An option that would change what was generated (model, grid, generation settings, apart from
        :data:`FREE_ON_RESUME`) and differs from the stored value is refused with a one-line
        ``UserError``: the grid and model always (start a new run for another grid), generation
        settings unless ``overwrite`` (which regenerates; never with ``skip_generation``). Judge,
        metrics and measures options may change (a re-judge, other thresholds, another batch size).
        """
        changed = []
        for section in GENERATED_BY:
            stored = getattr(self, section)
            for name, value in type(stored).given_values(args).items():
                if (section, name) not in FREE_ON_RESUME and _norm(value) != _norm(getattr(stored, name)):
                    changed.append((section, name, getattr(stored, name), value))
        refused = [c for c in changed if c[0] != "generation" or skip_generation or not overwrite]
        if refused:
            what = ", ".join(f"{name} ({old!r} -> {new!r})" for _, name, old, new in refused[:4])
            hint = ("start a new run (without --resume) for another grid or model"
                    if any(c[0] != "generation" for c in refused)
                    else "pass --overwrite to regenerate with the new settings, or start a new run")
            raise UserError(f"--resume {run_dir} keeps the run's settings; these differ from its config.json: "
                            f"{what}; {hint}")
        return self.from_args(args, self)


__all__ = ["FREE_ON_RESUME", "GENERATED_BY", "EvalConfig"]
