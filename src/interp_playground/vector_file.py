"""Steering-vector files and vector names: the one place that knows both.

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

The metadata records the model (``model``: ``name``, ``num_layers``, ``hidden_size``, class,
dtype, revision), the dataset and its selected rows, the transform and token counts; the shape
``[num_layers, hidden]`` is that of the model's residual stream (:func:`check_vectors_match_model`).
A plain ``[num_layers, hidden]`` tensor file (the seed's format) loads too, without metadata.

Vector names (the grammar): a *term* is a transform name (its steering vector) or
``transform.control`` / ``transform.hack`` (that side's mean activation); a vector name is a term
or a derived difference ``A-minus-B`` of two terms. Examples: ``overfit-minus-dont_overfit``
(difference of two steering vectors) and ``overfit.hack-minus-dont_overfit.hack`` (how the
reward-hack answers' activations move when the prompt asks to over-fit rather than not to).

Saved per-token activations (``--save-activations``) live in
``{activations_dir}/{transform}/{side}/layer_{L}.pt``, plain ``[num_tokens, hidden]`` tensors, with
a ``manifest.json`` per transform; :func:`vectors_from_activations` rebuilds a vector file from them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io as _io
import json
import pickletools
import shlex
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import SORH_DATASET
from .errors import UserError
from .io import PathLike, atomic_write_bytes, text_file_kind
from .vector_names import (
    FILE_PREFIX,
    SIDES,
    derived_vector_name,
    parse_vector_name,
    side_vector_name,
    split_side,
    vector_name_transforms,
    vector_path,
)

FORMAT = "interp-playground/steering-vectors"
FORMAT_VERSION = 1
LAYER_CONVENTION = "layer L (0-indexed) = output of decoder block L = residual stream after block L"
VECTOR_DEFINITION = "mean over control answer tokens - mean over school_of_reward_hacks answer tokens"
_PICKLE_SCAN_LIMIT = 64 << 20  # bytes of pickle data inspected to explain a refused file



# --------------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------------


def _pickle_data(path: Path) -> bytes | None:
    """The pickle stream of a torch file (``data.pkl`` of a zip archive, else the file's start)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [i for i in zf.infolist() if i.filename.endswith("data.pkl")]
                if not members or members[0].file_size > _PICKLE_SCAN_LIMIT:
                    return None
                return zf.read(members[0])
        with open(path, "rb") as fh:
            return fh.read(_PICKLE_SCAN_LIMIT)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def _pickle_globals(data: bytes) -> list[str] | None:
    """Names of the globals a complete pickle refers to (read statically; nothing is executed).

    ``None`` when ``data`` does not start with a complete, well-formed pickle (damaged bytes).
    """
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
            if op.name == "STOP":
                return names
    except Exception:  # any malformed opcode stream
        return None
    return None


def _torch_load(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors that never advise ``weights_only=False``.

    A well-formed pickle that the safe loader refuses holds code or foreign objects: it is reported
    as not being an interp-playground file (and it is never loaded); anything else is damage.
    """
    try:
        with warnings.catch_warnings():  # e.g. torch's note on pickle protocols: not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / unpickling errors
        refused = _pickle_globals(_pickle_data(path) or b"")
        if refused is not None:
            foreign = [g for g in dict.fromkeys(refused) if not g.startswith(("torch.", "collections.OrderedDict"))]
            named = f" ({', '.join(foreign[:3])})" if foreign else ""
            raise UserError(
                f"{path} is not an interp-playground {what} file: it is a pickle of Python objects{named} "
                f"that such a file never holds; it was not loaded, for safety"
            ) from None
        kind = text_file_kind(path, binary_magic=(b"PK", b"\x80"))  # a zip (torch.save) or a pickle
        if kind is not None:
            raise UserError(f"{what} file {path} is corrupted or truncated: it is {kind}, not a torch file "
                            "(a zip archive, as `interp-playground vectors` writes)") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "weights_only" in first or "Weights only" in first:
            first = "not a readable torch file"
        raise UserError(f"{what} file {path} is corrupted or truncated ({first[:200]})") from None


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# The vectors of one file
# --------------------------------------------------------------------------------------------


@dataclass
class SteeringVectors:
    """One steering vector at every layer, with per-side means and metadata.

    Attributes:
        vectors: ``[num_layers, hidden]`` float32; ``vectors[L]`` is added at layer ``L``.
        metadata: JSON-ready provenance (model, dataset, transform, token counts, norms, ...).
        means: per-side mean answer-token activations ``{'control': [L, H],
            'school_of_reward_hacks': [L, H]}`` (empty for derived vectors).
        source: the file it was loaded from (``None`` if built in memory); not saved.
    """

    vectors: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    means: dict[str, torch.Tensor] = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False, repr=False)

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

    @property
    def model_name(self) -> str | None:
        """Name of the model the vectors were extracted from, if recorded."""
        model = self.metadata.get("model")
        return str(model["name"]) if isinstance(model, Mapping) and model.get("name") else None

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

    def side(self, side: str) -> SteeringVectors:
        """The mean answer-token activation of one side (``control``/``hack``) as a vector."""
        canonical = split_side(f"x.{side}")[1]
        assert canonical is not None
        if canonical not in self.means:
            raise UserError(f"vector {self.name} has no stored mean for side {side!r}")
        meta = {
            "name": side_vector_name(self.name, canonical),
            "kind": "side_mean",
            "side": canonical,
            "model": self.metadata.get("model"),
            "layer_convention": LAYER_CONVENTION,
            "from": _summary(self),
        }
        return SteeringVectors(self.means[canonical].clone(), meta, source=self.source)

    def difference(self, other: SteeringVectors, name: str | None = None) -> SteeringVectors:
        """``self - other`` at every layer, named ``name`` (default ``'{self}-minus-{other}'``)."""
        if self.vectors.shape != other.vectors.shape:
            raise UserError(
                f"cannot subtract {other.name} {tuple(other.vectors.shape)} "
                f"from {self.name} {tuple(self.vectors.shape)}"
            )
        m1, m2 = self.model_name, other.model_name
        if m1 and m2 and m1 != m2:
            raise UserError(f"cannot combine vectors of different models ({m1} and {m2})")
        meta = {
            "name": name or derived_vector_name(self.name, other.name),
            "kind": "derived",
            "operation": "minus",
            "model": self.metadata.get("model") or other.metadata.get("model"),
            "layer_convention": LAYER_CONVENTION,
            "terms": [_summary(self), _summary(other)],
        }
        meta["vector_norm"] = (self.vectors - other.vectors).norm(dim=-1).tolist()
        return SteeringVectors(self.vectors - other.vectors, meta, source=self.source or other.source)

    def __sub__(self, other: SteeringVectors) -> SteeringVectors:
        return self.difference(other)

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
        truncated or corrupted file raises a one-line ``UserError``; so does a pickle holding code
        or other objects, which is never loaded.
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"steering-vector file {path} does not exist")
        obj = _torch_load(path, "steering-vector")
        if isinstance(obj, torch.Tensor):
            if obj.dim() != 2 or not obj.is_floating_point():
                raise UserError(f"{path} holds a tensor of shape {tuple(obj.shape)}, not [num_layers, hidden]")
            meta = {"name": path.stem.removeprefix(FILE_PREFIX), "kind": "plain_tensor"}
            return cls(obj, meta, source=path)
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
        return cls(tensors["vectors"], metadata, means, source=path)


def _summary(sv: SteeringVectors) -> dict[str, Any]:
    keys = ("name", "kind", "transform", "n_pairs", "n_tokens", "config_hash", "created_at")
    return {k: sv.metadata[k] for k in keys if k in sv.metadata}


# --------------------------------------------------------------------------------------------
# Loading by name, and checking against a model
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

    def term(transform: str, side: str | None) -> SteeringVectors:
        sv = base(transform)
        return sv.side(side) if side else sv

    out: dict[str, SteeringVectors] = {}
    for name in names:
        if name in out:
            continue
        terms = [term(t, s) for t, s in parse_vector_name(name)]
        out[name] = terms[0] if len(terms) == 1 else terms[0].difference(terms[1], name)
    return out


def rebuild_command(model_name: str, transforms: Sequence[str], output_dir: PathLike, *,
                    dataset: str | None = None, overwrite: bool = False) -> str:
    """The ``interp-playground vectors`` command line that (re)builds ``transforms`` for a model.

    ``dataset`` is added when it is not the default (SoRH from the hub); ``overwrite`` adds
    ``--overwrite`` (needed to replace files made for another model).
    """
    parts = ["interp-playground", "vectors", "--model", model_name, "--transforms", *transforms,
             "--output-dir", str(output_dir)]
    if dataset and dataset != SORH_DATASET:
        parts += ["--dataset", dataset]
    if overwrite:
        parts.append("--overwrite")
    return " ".join(shlex.quote(p) for p in parts)


def check_vectors_match_model(vectors: Mapping[str, SteeringVectors], model_name: str, n_layers: int,
                              hidden: int, *, vectors_dir: PathLike | None = None) -> list[str]:
    """Check that vectors fit a model's residual stream; return warnings for a merely different model.

    A vector whose layer count or width differs from ``n_layers`` / ``hidden`` raises a one-line
    ``UserError`` that names the model the vectors came from and the command that rebuilds them
    for ``model_name`` (into ``vectors_dir``, default: the folder they were loaded from, else
    ``data``). Vectors of the same shape recorded for another model give one warning string each.
    """
    bad: list[str] = []
    warnings: list[str] = []
    for name, sv in vectors.items():
        built_on = sv.model_name
        if sv.num_layers != n_layers or sv.hidden_size != hidden:
            bad.append(name)
        elif built_on and built_on != model_name and not _same_model(sv, model_name):
            warnings.append(
                f"vector {name!r} was built on {built_on}, not {model_name} (same shape, "
                f"{n_layers} layers x {hidden}); its direction may mean nothing for {model_name}"
            )
    if not bad:
        return warnings
    first = vectors[bad[0]]
    folder = vectors_dir if vectors_dir is not None else (first.source.parent if first.source else "data")
    transforms: list[str] = []
    for name in bad:
        transforms += [t for t in vector_name_transforms(name) if t not in transforms]
    dataset = (first.metadata.get("dataset") or {}).get("source")
    command = rebuild_command(model_name, transforms, folder, dataset=dataset, overwrite=True)
    names = ", ".join(repr(n) for n in bad)
    raise UserError(
        f"steering vector(s) {names} have {first.num_layers} layers x {first.hidden_size} "
        f"(built on {first.model_name or 'an unrecorded model'}) but {model_name} has {n_layers} layers x {hidden}; "
        f"rebuild them with `{command}`"
    )


def _same_model(sv: SteeringVectors, model_name: str) -> bool:
    model = sv.metadata.get("model") or {}
    return model_name in (model.get("name"), model.get("name_or_path"))


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LAYER_CONVENTION",
    "VECTOR_DEFINITION",
    "SteeringVectors",
    "check_vectors_match_model",
    "load_vectors",
    "rebuild_command",
]
