"""Steering-vector files: all layers of one vector plus the metadata that traces it.

A steering vector for transform ``T`` is, at every layer ``L`` (output of decoder block ``L``),
the mean residual over the *control* answer tokens minus the mean over the *reward-hack* answer
tokens, both with prompts rewritten by ``T``. Adding it (alpha > 0) pushes the model towards the
honest side; subtracting it pushes towards reward hacking.

File format (``{output_dir}/steering_vectors_{transform}.pt``, as the seed names it): a
``torch.save`` of a plain dict that ``torch.load(path, weights_only=True)`` reads without pickle
risks::

    {"format": "interp-playground/steering-vectors", "format_version": 1,
     "vectors": float32 [num_layers, hidden],
     "mean_control": float32 [num_layers, hidden],                 # per-side answer-token means
     "mean_school_of_reward_hacks": float32 [num_layers, hidden],
     "metadata_json": str,                                          # see SteeringVectors.metadata
     "sha256": str}                                                 # over tensors and metadata

Derived vectors are named ``A-minus-B`` where each term is a transform name (its steering vector)
or ``transform.control`` / ``transform.hack`` (that side's mean activation). Examples:
``overfit-minus-dont_overfit`` (difference of two steering vectors) and
``overfit.hack-minus-dont_overfit.hack`` (how the reward-hack answers' activations move when the
prompt asks to over-fit rather than not to).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io as _io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import (
    BUNDLED_NAME,
    NEGATIVE_COLUMN,
    NEGATIVE_SIDE,
    POSITIVE_COLUMN,
    POSITIVE_SIDE,
    PROMPT_COLUMN,
    SIDES,
    SORH_DATASET,
    _derived_terms,
    _split_side,
    base_transforms,
    get_transform,
    load_contrast_pairs,
    resolve_transforms,
)
from .errors import UserError
from .io import atomic_write_bytes, atomic_write_json, read_json, stable_hash

FORMAT = "interp-playground/steering-vectors"
FORMAT_VERSION = 1
LAYER_CONVENTION = "layer L (0-indexed) = output of decoder block L = residual stream after block L"
VECTOR_DEFINITION = "mean over control answer tokens - mean over school_of_reward_hacks answer tokens"
DIAGNOSTICS_PLOT = "steering_vectors_diagnostics.png"
_SHORT_SIDE = {POSITIVE_SIDE: "control", NEGATIVE_SIDE: "hack"}

PathLike = str | os.PathLike[str]


def vector_path(output_dir: PathLike, transform: str) -> Path:
    """``{output_dir}/steering_vectors_{transform}.pt``."""
    return Path(output_dir) / f"steering_vectors_{transform}.pt"


def activations_path(activations_dir: PathLike, transform: str, side: str, layer: int) -> Path:
    """``{activations_dir}/{transform}/{side}/layer_{layer}.pt``."""
    return Path(activations_dir) / transform / side / f"layer_{layer}.pt"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()


def _checksum(tensors: Mapping[str, torch.Tensor], metadata_json: str) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}:{str(t.dtype)}:{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    h.update(metadata_json.encode("utf-8"))
    return h.hexdigest()


@dataclass
class SteeringVectors:
    """One steering vector at every layer, with per-side means and metadata.

    Attributes:
        vectors: ``[num_layers, hidden]`` float32; ``vectors[L]`` is added at layer ``L``.
        metadata: JSON-ready provenance (model, dataset, transform, token counts, norms, ...).
        means: per-side mean answer-token activations ``{'control': [L, H],
            'school_of_reward_hacks': [L, H]}`` (empty for derived vectors).
    """

    vectors: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    means: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.dim() != 2:
            raise UserError("steering vectors must be a [num_layers, hidden] tensor")
        self.vectors = self.vectors.detach().to(device="cpu", dtype=torch.float32)
        for side, mean in list(self.means.items()):
            if side not in SIDES:
                raise UserError(f"unknown side {side!r} in steering-vector means")
            if tuple(mean.shape) != tuple(self.vectors.shape):
                raise UserError(f"mean of {side} has shape {tuple(mean.shape)}, vectors {tuple(self.vectors.shape)}")
            self.means[side] = mean.detach().to(device="cpu", dtype=torch.float32)

    @property
    def name(self) -> str:
        """The vector's name (transform or derived name)."""
        return str(self.metadata.get("name", "unnamed"))

    @property
    def num_layers(self) -> int:
        """Number of layers."""
        return int(self.vectors.shape[0])

    @property
    def hidden_size(self) -> int:
        """Width of each vector."""
        return int(self.vectors.shape[1])

    def layer(self, layer: int) -> torch.Tensor:
        """The ``[hidden]`` vector for layer ``layer`` (a copy)."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise UserError(f"layer must be an integer, got {layer!r}")
        if not 0 <= layer < self.num_layers:
            raise UserError(f"layer {layer} is out of range for vector {self.name} (valid: 0-{self.num_layers - 1})")
        return self.vectors[layer].clone()

    def norms(self) -> torch.Tensor:
        """L2 norm of the vector at each layer, ``[num_layers]``."""
        return self.vectors.norm(dim=-1)

    # ---- derived vectors ---------------------------------------------------------------------

    def side(self, side: str) -> SteeringVectors:
        """The mean answer-token activation of one side (``control``/``hack``) as a vector."""
        canonical = _split_side(f"x.{side}")[1]
        if canonical not in self.means:
            raise UserError(f"vector {self.name} has no stored mean for side {side!r}")
        meta = {
            "name": f"{self.name}.{_SHORT_SIDE[canonical]}",
            "kind": "side_mean",
            "side": canonical,
            "model": self.metadata.get("model"),
            "layer_convention": LAYER_CONVENTION,
            "from": _summary(self),
        }
        return SteeringVectors(self.means[canonical].clone(), meta)

    def difference(self, other: SteeringVectors, name: str | None = None) -> SteeringVectors:
        """``self - other`` at every layer, named ``name`` (default ``'{self}-minus-{other}'``)."""
        if self.vectors.shape != other.vectors.shape:
            raise UserError(
                f"cannot subtract {other.name} {tuple(other.vectors.shape)} "
                f"from {self.name} {tuple(self.vectors.shape)}"
            )
        m1 = (self.metadata.get("model") or {}).get("name")
        m2 = (other.metadata.get("model") or {}).get("name")
        if m1 and m2 and m1 != m2:
            raise UserError(f"cannot combine vectors of different models ({m1} and {m2})")
        meta = {
            "name": name or f"{self.name}-minus-{other.name}",
            "kind": "derived",
            "operation": "minus",
            "model": self.metadata.get("model") or other.metadata.get("model"),
            "layer_convention": LAYER_CONVENTION,
            "terms": [_summary(self), _summary(other)],
        }
        meta["vector_norm"] = (self.vectors - other.vectors).norm(dim=-1).tolist()
        return SteeringVectors(self.vectors - other.vectors, meta)

    def __sub__(self, other: SteeringVectors) -> SteeringVectors:
        return self.difference(other)

    # ---- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The dict stored in the file (tensors, metadata JSON, checksum)."""
        metadata_json = json.dumps(self.metadata, sort_keys=True, ensure_ascii=False)
        tensors = {"vectors": self.vectors.contiguous()}
        tensors.update({f"mean_{side}": m.contiguous() for side, m in self.means.items()})
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **tensors,
            "metadata_json": metadata_json,
            "sha256": _checksum(tensors, metadata_json),
        }

    def save(self, path: PathLike) -> Path:
        """Write the file atomically (temp file, then rename); return its path."""
        buf = _io.BytesIO()
        torch.save(self.to_dict(), buf)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: PathLike) -> SteeringVectors:
        """Read a vector file safely (``weights_only=True``) and verify its checksum.

        A plain ``[num_layers, hidden]`` tensor file is accepted too (no metadata). A missing,
        truncated or corrupted file raises a one-line ``UserError``.
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"steering-vector file {path} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # zip / unpickling errors of a damaged file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"steering-vector file {path} is corrupted or truncated ({first[:200]})") from None
        if isinstance(obj, torch.Tensor):
            if obj.dim() != 2 or not obj.is_floating_point():
                raise UserError(f"{path} holds a tensor of shape {tuple(obj.shape)}, not [num_layers, hidden]")
            return cls(obj, {"name": path.stem.removeprefix("steering_vectors_"), "kind": "plain_tensor"})
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise UserError(f"{path} is not an interp-playground steering-vector file")
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise UserError(f"{path} has format version {obj.get('format_version')}; upgrade interp-playground")
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        metadata_json = obj.get("metadata_json")
        if "vectors" not in tensors or not isinstance(metadata_json, str):
            raise UserError(f"steering-vector file {path} is incomplete (corrupted?)")
        if _checksum(tensors, metadata_json) != obj.get("sha256"):
            raise UserError(f"steering-vector file {path} failed its checksum (corrupted)")
        metadata = json.loads(metadata_json)
        means = {k[len("mean_"):]: v for k, v in tensors.items() if k.startswith("mean_")}
        return cls(tensors["vectors"], metadata, means)


def _summary(sv: SteeringVectors) -> dict[str, Any]:
    keys = ("name", "kind", "transform", "n_pairs", "n_tokens", "config_hash", "created_at")
    return {k: sv.metadata[k] for k in keys if k in sv.metadata}


# --------------------------------------------------------------------------------------------
# Loading by name
# --------------------------------------------------------------------------------------------


def load_vectors(output_dir: PathLike, names: Sequence[str]) -> dict[str, SteeringVectors]:
    """Load vectors by name from ``output_dir``.

    A name is a transform (``default``, ``overfit``, ...: the file ``steering_vectors_{name}.pt``),
    a side mean (``overfit.hack``, ``overfit.control``) or a derived difference ``A-minus-B`` of two
    such terms, e.g. ``overfit-minus-dont_overfit`` or ``overfit.hack-minus-dont_overfit.hack``.
    """
    cache: dict[str, SteeringVectors] = {}

    def base(transform: str) -> SteeringVectors:
        if transform not in cache:
            path = vector_path(output_dir, transform)
            if not path.is_file():
                raise UserError(
                    f"no steering vectors for {transform!r} at {path}; "
                    f"create them with `interp-playground vectors --transforms {transform}`"
                )
            sv = SteeringVectors.load(path)
            sv.metadata.setdefault("name", transform)
            cache[transform] = sv
        return cache[transform]

    def term(text: str) -> SteeringVectors:
        name, side = _split_side(text)
        if not name or "-" in name:
            raise UserError(f"cannot parse vector name {text!r}; use NAME, NAME.control|hack or A-minus-B")
        sv = base(name)
        return sv.side(side) if side else sv

    out: dict[str, SteeringVectors] = {}
    for name in names:
        if name in out:
            continue
        terms = _derived_terms(name)
        if terms is None and "-minus-" in name:
            raise UserError(f"cannot parse derived vector name {name!r}; use A-minus-B with exactly two terms")
        out[name] = term(name) if terms is None else term(terms[0]).difference(term(terms[1]), name)
    return out


def _load_activation(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise UserError(f"activation file {path} does not exist")
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"activation file {path} is corrupted or truncated ({first[:200]})") from None
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        raise UserError(f"activation file {path} does not hold a [num_tokens, hidden] tensor")
    if t.shape[0] == 0:
        raise UserError(f"activation file {path} holds no tokens")
    return t


def _activation_folder(activations_dir: PathLike, transform: str) -> Path:
    root = Path(activations_dir)
    if (root / transform / POSITIVE_SIDE).is_dir():
        return root / transform
    if transform == "default" and (root / POSITIVE_SIDE).is_dir():
        return root  # the seed's flat layout: {activations_dir}/control/layer_{L}.pt
    raise UserError(f"no saved activations for transform {transform!r} under {root}")


def load_steering_vector(layer_idx: int, activations_dir: PathLike | None = None,
                         transform: str = "default", vectors_dir: PathLike = "data") -> torch.Tensor:
    """The ``[hidden]`` float32 steering vector of one layer.

    Without ``activations_dir`` it comes from ``{vectors_dir}/steering_vectors_{transform}.pt``
    (``transform`` may be a derived name, see :func:`load_vectors`). With ``activations_dir`` it is
    computed from saved per-token activations as ``control.mean(0) - rh.mean(0)`` over
    ``{activations_dir}/{transform}/{control,school_of_reward_hacks}/layer_{L}.pt`` (or the seed's
    flat ``{activations_dir}/{control,...}/layer_{L}.pt`` for the default transform).
    """
    if activations_dir is None:
        return load_vectors(vectors_dir, [transform])[transform].layer(layer_idx)
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0:
        raise UserError(f"layer must be a non-negative integer, got {layer_idx!r}")
    folder = _activation_folder(activations_dir, transform)
    control = _load_activation(folder / POSITIVE_SIDE / f"layer_{layer_idx}.pt")
    hack = _load_activation(folder / NEGATIVE_SIDE / f"layer_{layer_idx}.pt")
    if control.shape[1] != hack.shape[1]:
        raise UserError(f"control and reward-hack activations in {folder} have different widths")
    return control.to(torch.float32).mean(0) - hack.to(torch.float32).mean(0)


def vectors_from_activations(activations_dir: PathLike, transform: str) -> SteeringVectors:
    """Rebuild a transform's vectors from its saved activations and ``manifest.json``.

    Means come from the half-precision token activations, so they match an extraction's float32
    means only to about 1e-3 relative.
    """
    folder = Path(activations_dir) / transform
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(
            f"no complete saved activations for transform {transform!r} in {folder}; "
            f"run without --skip-extraction and with --save-activations first"
        )
    manifest = read_json(manifest_path)
    n_layers = int(manifest["model"]["num_layers"])
    means: dict[str, list[torch.Tensor]] = {s: [] for s in SIDES}
    norms: dict[str, list[float]] = {s: [] for s in SIDES}
    n_tokens: dict[str, int] = {}
    for side in SIDES:
        for layer in range(n_layers):
            t = _load_activation(folder / side / f"layer_{layer}.pt").to(torch.float32)
            means[side].append(t.mean(0))
            norms[side].append(float(t.norm(dim=-1).mean()))
            n_tokens[side] = int(t.shape[0])
            del t
    mean_t = {s: torch.stack(means[s]) for s in SIDES}
    vectors = mean_t[POSITIVE_SIDE] - mean_t[NEGATIVE_SIDE]
    meta = {k: v for k, v in manifest.items() if k not in ("activations",)}
    meta.update(
        source="activations",
        activations_dir=str(folder),
        n_tokens=n_tokens,
        residual_norm=norms,
        vector_norm=vectors.norm(dim=-1).tolist(),
        created_at=_now(),
    )
    return SteeringVectors(vectors, meta, mean_t)


# --------------------------------------------------------------------------------------------
# Creating vectors (the `vectors` command's core)
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import transformers

    from . import __version__

    return {"package_version": __version__, "torch_version": torch.__version__,
            "transformers_version": transformers.__version__}


def _run_config(model_name: str, revision: str | None, stats: Any, transform: str, thinking: bool) -> dict[str, Any]:
    t = get_transform(transform)
    return {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "revision": revision,
        "dataset_content_hash": stats.content_hash,
        "columns": stats.columns,
        "selected_ids": stats.selected_ids,
        "transform": {"name": t.name, "suffix": t.suffix},
        "thinking": bool(thinking),
    }


def _config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def plot_diagnostics(vectors: Mapping[str, SteeringVectors], path: PathLike) -> Path:
    """Per-layer diagnostics of several vectors in one PNG (written atomically).

    Panels: the vector norm; the mean residual norm of each side at answer tokens; the vector norm
    relative to the residual norm (what ``alpha = 1`` means at each layer); the cosine similarity
    between each pair of vectors (or, for a single vector, between adjacent layers).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(19, 4.4), layout="constrained")
    ax_norm, ax_res, ax_rel, ax_cos = fig.subplots(1, 4)
    names = list(vectors)
    for i, name in enumerate(names):
        sv = vectors[name]
        layers = list(range(sv.num_layers))
        c = f"C{i % 10}"
        norms = sv.norms()
        ax_norm.plot(layers, norms.tolist(), marker=".", color=c, label=name)
        res = sv.metadata.get("residual_norm") or {}
        for side, style in ((POSITIVE_SIDE, "-"), (NEGATIVE_SIDE, "--")):
            if side in res and len(res[side]) == sv.num_layers:
                ax_res.plot(layers, res[side], style, color=c, label=f"{name} / {_SHORT_SIDE[side]}")
        if all(side in res and len(res[side]) == sv.num_layers for side in SIDES):
            mean_res = (torch.tensor(res[POSITIVE_SIDE]) + torch.tensor(res[NEGATIVE_SIDE])) / 2
            ax_rel.plot(layers, (norms / mean_res.clamp(min=1e-12)).tolist(), marker=".", color=c, label=name)
    if len(names) >= 2:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        for k, (a, b) in enumerate(pairs):
            va, vb = vectors[a].vectors, vectors[b].vectors
            if va.shape != vb.shape:
                continue
            cos = torch.nn.functional.cosine_similarity(va, vb, dim=-1)
            ax_cos.plot(range(len(cos)), cos.tolist(), marker=".", color=f"C{k % 10}", label=f"{a} vs {b}")
        ax_cos.set_title("cosine similarity between vectors")
    elif names:
        v = vectors[names[0]].vectors
        if v.shape[0] > 1:
            cos = torch.nn.functional.cosine_similarity(v[1:], v[:-1], dim=-1)
            ax_cos.plot(range(1, v.shape[0]), cos.tolist(), marker=".", label=f"{names[0]}: layer L vs L-1")
        ax_cos.set_title("cosine similarity of adjacent layers")
    ax_norm.set_title("steering-vector norm")
    ax_res.set_title("mean residual norm at answer tokens")
    ax_rel.set_title("vector norm / mean residual norm")
    for ax in (ax_norm, ax_res, ax_rel, ax_cos):
        ax.set_xlabel("layer (output of decoder block L)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax_cos.set_ylim(top=1.02)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def create_steering_vectors(
    model: str | tuple[Any, Any] = "Qwen/Qwen3-8B",
    transforms: Sequence[str] = ("all",),
    dataset: str | os.PathLike[str] = SORH_DATASET,
    n_samples: int | None = 100,
    output_dir: PathLike = "data",
    *,
    batch_size: int = 8,
    seed: int = 0,
    test_fraction: float = 0.0,
    prompt_column: str = PROMPT_COLUMN,
    positive_column: str = POSITIVE_COLUMN,
    negative_column: str = NEGATIVE_COLUMN,
    split: str = "train",
    save_activations: bool = False,
    activations_dir: PathLike | None = None,
    skip_extraction: bool = False,
    overwrite: bool = False,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    revision: str | None = None,
    thinking: bool = False,
    plot: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Path]:
    """Extract answer-token means and write ``steering_vectors_{transform}.pt`` for each transform.

    Every input is validated (transform names, counts, dataset and its columns, model name via
    its tokenizer) before the model is loaded. A transform whose vector file exists with the same
    settings is skipped unless ``overwrite``; one that exists with different settings is an error
    (nothing is overwritten without ``overwrite``). With ``save_activations``, per-token answer
    activations go to ``{activations_dir}/{transform}/{side}/layer_{L}.pt`` (default
    ``{output_dir}/activations``). With ``skip_extraction`` no model is loaded: vectors are rebuilt
    from such saved activations.

    Args:
        model: a model name for :func:`interp_playground.models.load_model_and_tokenizer`, or an
            already loaded ``(model, tokenizer)``.
        transforms: transform names, ``all`` for every registered one. Derived names
            (``a-minus-b``, ``a.hack``) are accepted and create the files of their transforms;
            the derived vectors themselves are computed when loaded (:func:`load_vectors`).
        dataset: hub id, local file, or ``bundled``.
        n_samples: pairs to use per transform (``None``: all).

    Returns:
        ``{transform: vector file path}``.
    """
    say = log or (lambda _msg: None)
    names = base_transforms(resolve_transforms(transforms))
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0):
        raise UserError(f"--n-samples must be a positive integer, got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {batch_size!r}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output-dir {output_dir} exists and is not a folder")
    act_root = Path(activations_dir) if activations_dir is not None else output_dir / "activations"
    paths = {t: vector_path(output_dir, t) for t in names}

    if skip_extraction:
        rebuild = [t for t in names if overwrite or not paths[t].is_file()]
        for t in rebuild:  # validate all before writing any
            if not (act_root / t / "manifest.json").is_file():
                raise UserError(
                    f"--skip-extraction: no complete saved activations for {t!r} in {act_root / t}; "
                    f"run once with --save-activations"
                )
        for t in names:
            if t not in rebuild:
                say(f"{t}: {paths[t]} exists, skipped (pass --overwrite to rebuild it)")
                continue
            sv = vectors_from_activations(act_root, t)
            sv.save(paths[t])
            say(f"{t}: rebuilt from {act_root / t} -> {paths[t]}")
        if plot:
            _plot_folder(output_dir, names, say)
        return paths

    pairs, stats = load_contrast_pairs(
        dataset, prompt_column=prompt_column, positive_column=positive_column,
        negative_column=negative_column, n_samples=n_samples, seed=seed,
        test_fraction=test_fraction, split=split,
    )
    if isinstance(model, str):
        from .models import _parse_dtype, default_device, load_tokenizer

        _parse_dtype(dtype, device or default_device())  # a bad --dtype fails here, not after the dataset
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but no CUDA device is visible")
        model_name = model
        tokenizer = load_tokenizer(model, revision=revision)  # fails fast on an unreachable name
        loaded = None
    else:
        from .models import model_info

        loaded, tokenizer = model
        model_name = str(model_info(loaded)["name_or_path"])
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {model_name} has no chat template; extraction needs one")
    if n_samples is not None and len(pairs) < n_samples:
        say(f"note: only {len(pairs)} usable pairs (asked for {n_samples}); using all of them")
    say(f"dataset {stats.source}: {stats.n_rows} rows, {stats.n_skipped} skipped (empty answer), "
        f"{len(stats.test_ids)} held out, {len(pairs)} used")

    configs = {t: _run_config(model_name, revision, stats, t, thinking) for t in names}
    todo: list[str] = []
    for t in names:
        path = paths[t]
        if overwrite or not path.exists():
            todo.append(t)
            continue
        try:
            existing = SteeringVectors.load(path)
        except UserError as exc:
            raise UserError(f"{exc}; pass --overwrite to recompute it") from None
        old = existing.metadata.get("config") or {}
        diff = _config_diff(old, configs[t])
        if diff:
            raise UserError(
                f"{path} was made with different settings ({', '.join(diff)}); "
                f"pass --overwrite to replace it or choose another --output-dir"
            )
        if save_activations and not (act_root / t / "manifest.json").is_file():
            todo.append(t)
            continue
        say(f"{t}: {path} already done, skipped (pass --overwrite to recompute)")

    if todo:
        if loaded is None:
            from .models import load_model_and_tokenizer

            say(f"loading {model_name} ...")
            loaded, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype, device=device, revision=revision)
        _extract_and_save(loaded, tokenizer, model_name, pairs, stats, todo, paths, configs,
                          batch_size=batch_size, thinking=thinking,
                          act_root=act_root if save_activations else None, progress=progress, say=say)
    if plot:
        _plot_folder(output_dir, names, say)
    return paths


def _extract_and_save(model: Any, tokenizer: Any, model_name: str, pairs: Sequence[Any], stats: Any,
                      todo: Sequence[str], paths: Mapping[str, Path], configs: Mapping[str, Any], *,
                      batch_size: int, thinking: bool, act_root: Path | None, progress: bool,
                      say: Callable[[str], None]) -> None:
    from .extract import extract_pair_means
    from .models import model_info

    info = model_info(model)
    for t in todo:
        folder = None
        if act_root is not None:
            folder = act_root / t
            (folder / "manifest.json").unlink(missing_ok=True)  # incomplete until rewritten
        result = extract_pair_means(model, tokenizer, pairs, batch_size, transform=t, thinking=thinking,
                                    activations_dir=folder, progress=progress)
        means = {side: result[side].means for side in SIDES}
        vectors = means[POSITIVE_SIDE] - means[NEGATIVE_SIDE]
        transform = get_transform(t)
        meta: dict[str, Any] = {
            "name": t,
            "kind": "transform",
            "created_at": _now(),
            **_versions(),
            "model": {"name": model_name, **info},
            "layer_convention": LAYER_CONVENTION,
            "vector_definition": VECTOR_DEFINITION,
            "transform": {"name": t, "suffix": transform.suffix},
            "thinking": bool(thinking),
            "dataset": stats.to_dict(),
            "seed": stats.seed,
            "n_pairs": len(pairs),
            "n_tokens": {side: result[side].n_tokens for side in SIDES},
            "residual_norm": {side: result[side].mean_norms.tolist() for side in SIDES},
            "vector_norm": vectors.norm(dim=-1).tolist(),
            "batch_size": batch_size,
            "source": "extraction",
            "config": configs[t],
            "config_hash": stable_hash(configs[t]),
        }
        SteeringVectors(vectors, meta, means).save(paths[t])
        if folder is not None:
            manifest = dict(meta)
            manifest["activations"] = {
                "dtype": "float16",
                "shape": "[num_tokens, hidden] per layer; tokens example by example in pair_ids order",
                "pair_ids": [p.id for p in pairs],
                "token_counts": {side: result[side].token_counts for side in SIDES},
            }
            atomic_write_json(folder / "manifest.json", manifest)
        say(f"{t}: {len(pairs)} pairs, {result[POSITIVE_SIDE].n_tokens}/{result[NEGATIVE_SIDE].n_tokens} "
            f"answer tokens (control/hack) -> {paths[t]}")


def _plot_folder(output_dir: Path, names: Sequence[str], say: Callable[[str], None]) -> Path | None:
    """Plot this run's vectors plus other readable vector files of the same model in the folder."""
    loaded = load_vectors(output_dir, list(names))
    if not loaded:
        return None
    first = next(iter(loaded.values()))
    model_name = (first.metadata.get("model") or {}).get("name")
    for p in sorted(output_dir.glob("steering_vectors_*.pt")):
        name = p.stem[len("steering_vectors_"):]
        if name in loaded:
            continue
        try:
            sv = SteeringVectors.load(p)
        except UserError:
            continue
        same_model = (sv.metadata.get("model") or {}).get("name") == model_name
        if same_model and sv.vectors.shape == first.vectors.shape:
            loaded[name] = sv
    path = plot_diagnostics(loaded, output_dir / DIAGNOSTICS_PLOT)
    say(f"diagnostics plot -> {path}")
    return path


__all__ = [
    "BUNDLED_NAME",
    "DIAGNOSTICS_PLOT",
    "FORMAT",
    "FORMAT_VERSION",
    "LAYER_CONVENTION",
    "SteeringVectors",
    "activations_path",
    "create_steering_vectors",
    "load_steering_vector",
    "load_vectors",
    "plot_diagnostics",
    "vector_path",
    "vectors_from_activations",
]
