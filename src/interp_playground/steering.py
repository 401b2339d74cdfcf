"""Steering hooks: add ``alpha * v`` to, or project a direction out of, the residual stream.

Every hook sits on the output of a decoder block, so layer ``L`` means the residual stream after
block ``L`` (see :mod:`interp_playground.models`). All hooks are context managers that remove
themselves in ``finally``, also when the body raises.

Three shapes of the same mechanism:

* :func:`steer` — one vector, one or several layers, one alpha, every row of the batch.
* :func:`ablate` — directional ablation (``h - (h . u) u``) at one or several layers.
* :func:`row_steering` — per-row steering: row ``i`` of the batch has its own layers, vector,
  alpha and operation (or none). This is what lets a sweep pack many conditions into one batch.

``positions`` picks where in the sequence the hook acts: ``"all"`` (every position, prompt
included — the seed's behaviour and the default) or ``"generated"`` (only positions after the
prompt, i.e. the decode steps of a KV-cached generation: the first forward call with more than one
token is taken as the prompt and left untouched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .errors import UserError
from .models import decoder_layers, hidden_size

Positions = Literal["all", "generated"]
Op = Literal["add", "ablate"]
VectorLike = torch.Tensor | Mapping[int, torch.Tensor]


def _hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a decoder block's output (Tensor in transformers 5, tuple in 4)."""
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return hidden


def steering_delta(vector: torch.Tensor, alpha: float, dtype: torch.dtype) -> torch.Tensor:
    """``alpha * vector`` computed in float32, then cast to the residual's dtype.

    This is the exact quantity every add-hook adds, so tests and callers can reproduce it.
    """
    return (float(alpha) * vector.detach().to(torch.float32)).to(dtype)


def _unit(vector: torch.Tensor) -> torch.Tensor:
    v = vector.detach().to(torch.float32)
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise UserError("cannot ablate a zero (or non-finite) direction")
    return v / norm


def _vector_for_layer(vector: VectorLike, layer: int, n_layers: int) -> torch.Tensor:
    if isinstance(vector, Mapping):
        if layer not in vector:
            raise UserError(f"no vector given for layer {layer}")
        return vector[layer]
    if vector.dim() == 2:  # [num_layers, hidden]
        if vector.shape[0] != n_layers:
            raise UserError(f"steering vectors cover {vector.shape[0]} layers, the model has {n_layers}")
        return vector[layer]
    return vector


def _check_layers(model: torch.nn.Module, layers: int | Sequence[int]) -> list[int]:
    n = len(decoder_layers(model))
    out = [layers] if isinstance(layers, int) else list(layers)
    if not out:
        raise UserError("no layer given to steer")
    for layer in out:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise UserError(f"layer must be an integer, got {layer!r}")
        if not 0 <= layer < n:
            raise UserError(f"layer {layer} is out of range for this model (valid: 0-{n - 1})")
    return out


def _check_vector(model: torch.nn.Module, vector: torch.Tensor) -> None:
    h = hidden_size(model)
    if vector.shape[-1] != h:
        raise UserError(f"steering vector has hidden size {vector.shape[-1]}, the model has {h}")


class _PositionGate:
    """Decides, per forward call, whether a hook acts (from call shapes alone: no GPU sync).

    ``all``: always. ``generated``: not on a call that feeds a prompt (the first call, or any call
    with more than one new token), and on every single-token decode step after it.
    """

    def __init__(self, positions: Positions) -> None:
        if positions not in ("all", "generated"):
            raise UserError(f"positions must be 'all' or 'generated', got {positions!r}")
        self.positions = positions
        self.in_generation = False

    def active(self, seq_len: int) -> bool:
        """Whether to act on a forward call that brings ``seq_len`` new positions."""
        if self.positions == "all":
            return True
        if seq_len > 1 or not self.in_generation:  # a new prompt (prefill)
            self.in_generation = True
            return False
        return True


@dataclass
class _LayerEdit:
    """What one hook does to the residual at one layer: an additive delta and/or an ablation.

    ``delta`` is ``[hidden]`` (all rows) or ``[batch, hidden]`` (per row; zero rows untouched).
    ``unit`` likewise holds unit directions to project out (zero rows untouched).
    """

    delta: torch.Tensor | None = None
    unit: torch.Tensor | None = None
    gate: _PositionGate = field(default_factory=lambda: _PositionGate("all"))

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.gate.active(hidden.shape[1]):
            return hidden
        out = hidden
        if self.unit is not None:
            u = self.unit.to(device=hidden.device)
            u = u[:, None, :] if u.dim() == 2 else u
            proj = (out.to(torch.float32) * u).sum(-1, keepdim=True) * u
            out = out - proj.to(out.dtype)
        if self.delta is not None:
            d = self.delta.to(device=hidden.device, dtype=hidden.dtype)
            out = out + (d[:, None, :] if d.dim() == 2 else d)
        return out


@contextlib.contextmanager
def _hooked(model: torch.nn.Module, edits: Mapping[int, _LayerEdit]) -> Iterator[None]:
    layers = decoder_layers(model)
    handles = []

    def make_hook(edit: _LayerEdit):
        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
            return _replace_hidden(output, edit.apply(_hidden_of(output)))

        return hook

    try:
        for layer, edit in edits.items():
            handles.append(layers[layer].register_forward_hook(make_hook(edit)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@contextlib.contextmanager
def steer(
    model: torch.nn.Module,
    vector: VectorLike,
    layers: int | Sequence[int],
    alpha: float = 1.0,
    positions: Positions = "all",
) -> Iterator[None]:
    """Add ``alpha * vector`` to the residual stream after each block in ``layers``.

    ``vector`` is ``[hidden]`` (the same vector at every layer), ``[num_layers, hidden]`` or a
    ``{layer: [hidden]}`` mapping (a vector per layer).

    >>> with steer(model, v, layers=12, alpha=4.0):
    ...     out = model.generate(**inputs)
    """
    layer_list = _check_layers(model, layers)
    dtype = _model_dtype(model)
    edits = {}
    for layer in layer_list:
        v = _vector_for_layer(vector, layer, len(decoder_layers(model)))
        _check_vector(model, v)
        edits[layer] = _LayerEdit(delta=steering_delta(v, alpha, dtype), gate=_PositionGate(positions))
    with _hooked(model, edits):
        yield


@contextlib.contextmanager
def ablate(
    model: torch.nn.Module,
    direction: VectorLike,
    layers: int | Sequence[int],
    positions: Positions = "all",
) -> Iterator[None]:
    """Project the unit ``direction`` out of the residual after each block in ``layers``.

    Afterwards the residual has (up to rounding) no component along ``direction`` there.
    """
    layer_list = _check_layers(model, layers)
    edits = {}
    for layer in layer_list:
        v = _vector_for_layer(direction, layer, len(decoder_layers(model)))
        _check_vector(model, v)
        edits[layer] = _LayerEdit(unit=_unit(v), gate=_PositionGate(positions))
    with _hooked(model, edits):
        yield


@dataclass(frozen=True)
class RowSteer:
    """The steering of one batch row: ``op`` (add or ablate) ``vector`` at ``layers``, scaled by ``alpha``.

    ``vector`` may be ``[hidden]``, ``[num_layers, hidden]`` or ``{layer: [hidden]}``.
    ``alpha`` is ignored by ``ablate``.
    """

    layers: tuple[int, ...]
    vector: Any
    alpha: float = 1.0
    op: Op = "add"

    @staticmethod
    def at(layer: int | Sequence[int], vector: VectorLike, alpha: float = 1.0, op: Op = "add") -> RowSteer:
        """Convenience constructor taking one layer or several."""
        layers = (layer,) if isinstance(layer, int) else tuple(layer)
        return RowSteer(layers=layers, vector=vector, alpha=alpha, op=op)


def build_row_edits(
    model: torch.nn.Module, rows: Sequence[RowSteer | None], positions: Positions = "all"
) -> dict[int, _LayerEdit]:
    """Per-layer ``[batch, hidden]`` buffers for :func:`row_steering` (validated, on the model's device)."""
    dtype = _model_dtype(model)
    device = next(model.parameters()).device
    h = hidden_size(model)
    batch = len(rows)
    deltas: dict[int, torch.Tensor] = {}
    units: dict[int, torch.Tensor] = {}
    for i, row in enumerate(rows):
        if row is None:
            continue
        if row.op not in ("add", "ablate"):
            raise UserError(f"unknown steering op {row.op!r}; use 'add' or 'ablate'")
        for layer in _check_layers(model, row.layers):
            v = _vector_for_layer(row.vector, layer, len(decoder_layers(model)))
            _check_vector(model, v)
            if row.op == "add":
                buf = deltas.setdefault(layer, torch.zeros(batch, h, dtype=dtype, device=device))
                buf[i] += steering_delta(v, row.alpha, dtype).to(device)
            else:
                buf = units.setdefault(layer, torch.zeros(batch, h, dtype=torch.float32, device=device))
                buf[i] = _unit(v).to(device)
    return {
        layer: _LayerEdit(delta=deltas.get(layer), unit=units.get(layer), gate=_PositionGate(positions))
        for layer in sorted(set(deltas) | set(units))
    }


@contextlib.contextmanager
def row_steering(
    model: torch.nn.Module, rows: Sequence[RowSteer | None], positions: Positions = "all"
) -> Iterator[None]:
    """Steer each batch row its own way; ``None`` rows are left exactly untouched.

    ``rows`` must have one entry per batch row, in batch order, for every forward call made inside
    the context (generation keeps the batch fixed, so this holds for ``model.generate``).
    """
    edits = build_row_edits(model, rows, positions)
    batch = len(rows)

    def check(edit: _LayerEdit) -> _LayerEdit:
        original = edit.apply

        def apply(hidden: torch.Tensor) -> torch.Tensor:
            if hidden.shape[0] != batch:
                raise RuntimeError(f"row_steering set up for {batch} rows, got a batch of {hidden.shape[0]}")
            return original(hidden)

        edit.apply = apply  # type: ignore[method-assign]
        return edit

    with _hooked(model, {layer: check(edit) for layer, edit in edits.items()}):
        yield


@contextlib.contextmanager
def capture_layers(model: torch.nn.Module, layers: int | Sequence[int] | None = None) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record block outputs (layer ``L`` = output of block ``L``) of every forward call.

    Yields ``{layer: [tensor per forward call]}``. Hooks registered after a steering hook on the
    same block see the steered output, so enter this context inside a steering context to read what
    the next block receives.
    """
    n = len(decoder_layers(model))
    layer_list = list(range(n)) if layers is None else _check_layers(model, layers)
    store: dict[int, list[torch.Tensor]] = {layer: [] for layer in layer_list}
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer in layer_list:
            def hook(_m: torch.nn.Module, _i: Any, output: Any, layer: int = layer) -> None:
                store[layer].append(_hidden_of(output).detach())

            handles.append(blocks[layer].register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()
