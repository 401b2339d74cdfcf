"""The settings of a whole evaluation run: one settings object per stage, as ``config.json`` stores them.

The orchestrator (:func:`interp_playground.pipeline.run_eval`) and the single-stage commands read a run's
settings back through :class:`EvalConfig`; each stage gets its own section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .judge.settings import JudgeSettings
from .settings import GenerationSettings, GridSettings, MetricsSettings, ModelSettings, Settings

_SECTIONS: dict[str, type[Settings]] = {
    "model": ModelSettings, "grid": GridSettings, "generation": GenerationSettings, "judge": JudgeSettings,
    "metrics": MetricsSettings,
}
# flat (schema 1) config keys of the judge -> its fields
_FLAT_JUDGE = {key: name for name, key in zip(JudgeSettings().to_dict(), JudgeSettings().to_flat_dict(), strict=True)}


@dataclass
class EvalConfig:
    """Everything that defines an evaluation run: one settings object per stage.

    ``config.json`` stores it as ``{"model": {...}, "grid": {...}, "generation": {...}, "judge": {...},
    "metrics": {...}}``; :meth:`from_dict` also reads the flat layout of runs made before that.
    :meth:`build` takes flat keyword arguments (``EvalConfig.build(model="smollm2-135m", layers=[3])``).
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    grid: GridSettings = field(default_factory=GridSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

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
        return cls(model=ModelSettings.from_dict(sections.get("model")), grid=GridSettings.from_dict(sections.get("grid")),
                   generation=GenerationSettings.from_dict(sections.get("generation")),
                   judge=JudgeSettings.from_dict(sections.get("judge")),
                   metrics=MetricsSettings.from_dict(sections.get("metrics")))

    @classmethod
    def build(cls, **flat: Any) -> EvalConfig:
        """From flat keyword arguments: any field of any section (``judge_*`` for the judge's)."""
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for key, value in flat.items():
            if key in _FLAT_JUDGE:
                sections["judge"][_FLAT_JUDGE[key]] = value
                continue
            for name, kind in _SECTIONS.items():
                if name != "judge" and key in kind.__dataclass_fields__:  # type: ignore[attr-defined]
                    sections[name][key] = value
                    break
        return cls._of(sections)


__all__ = ["EvalConfig"]
