"""Fusing the decode step's element-wise work (torch.compile), once per machine and off the critical path.

Compiling the step's functions takes ~20-40 s on a fresh machine and, with the compiler's caches on
disk, still ~8 s per process (tracing and loading). So a run never waits for it: the runner starts
with its plain functions captured in CUDA graphs (~1.5 s), a :class:`Warmup` thread compiles (or
loads) the fused functions meanwhile, and the runner switches to them between two steps once they
are ready. The compiler's artifacts go to one folder per machine and software
(:func:`cache_dir`: torch, Triton and CUDA versions, the GPU and the model's shapes), under the
user's cache folder, so the compilation happens once per machine, not per process or reboot.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import step

log = logging.getLogger(__name__)

#: Environment variable overriding the compile cache's parent folder.
CACHE_ENV = "INTERP_PLAYGROUND_COMPILE_CACHE"
#: File written into a cache folder once a compilation into it has finished.
READY = "ready"
#: Tries of the background compilation before the run gives up on fusion (a compilation in one
#: fresh process on an H200 failed once with a spurious "FX trace of a dynamo-optimized function").
ATTEMPTS = 2

_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}
_WARMUPS: dict[Any, Warmup] = {}
_LOCK = threading.Lock()


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The process's one compiled form of ``fn`` (one wrapper, so every runner and the warm-up
    thread share its compiled code instead of compiling again)."""
    import torch._dynamo

    with _LOCK:
        if fn not in _COMPILED:
            # one compiled variant per steering layout: allow more than 8
            for name in ("recompile_limit", "cache_size_limit"):
                if getattr(torch._dynamo.config, name, 64) < 64:
                    setattr(torch._dynamo.config, name, 64)
            _COMPILED[fn] = torch.compile(fn, fullgraph=True)
        return _COMPILED[fn]


def step_functions(fused: bool) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The decode step's ``qkv``, ``block_out`` and ``head``: compiled when ``fused``."""
    fns = (step.qkv, step.block_out, step.head)
    if not fused:
        return fns
    return compiled(fns[0]), compiled(fns[1]), compiled(fns[2])


def cache_key(shapes: Any, device: torch.device) -> str:
    """A folder name for the compiled artifacts of these model shapes on this device and software."""
    import triton  # only called on CUDA, where the fast engine's attention needs Triton anyway

    name = torch.cuda.get_device_name(device)
    parts = [torch.__version__, str(torch.version.cuda), triton.__version__, name,
             str(torch.cuda.get_device_capability(device)), repr(shapes)]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    gpu = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return f"{gpu}-torch{torch.__version__.split('+')[0]}-{digest}"


def cache_dir(key: str) -> Path:
    """The compile cache folder of ``key``: ``$INTERP_PLAYGROUND_COMPILE_CACHE/<key>``, else
    ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/interp_playground/compile/<key>``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "interp_playground" / "compile")
    return Path(root) / key


def use_cache_dir(path: Path) -> Path:
    """Point torch.compile's (inductor's) and Triton's caches at ``path`` unless the user set them.
    Returns the folder inductor will use."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # an unwritable home: the compiler's own defaults stay
        log.warning("fast engine: cannot create the compile cache %s (%s)", path, exc)
        return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(path / "triton"))
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compiled_before(path: Path) -> bool:
    """Whether a compilation into the cache folder ``path`` has finished before (on this machine)."""
    return (path / READY).exists()


def warmup(key: Any, warm: Callable[[], None], cache: Path | None) -> Warmup:
    """The process's one :class:`Warmup` for ``key`` (made, not started, on first use): every engine
    of the process shares it, so two compilations of the same functions never run at once."""
    with _LOCK:
        if key not in _WARMUPS:
            _WARMUPS[key] = Warmup(warm, cache)
        return _WARMUPS[key]


class Warmup:
    """Compiles (or loads) the fused step functions in a background thread by running ``warm``.

    :attr:`done` is set when it finished; :attr:`error` holds the exception if it failed (the run
    then stays unfused); on success the cache folder (if any) is marked :data:`READY`."""

    def __init__(self, warm: Callable[[], None], cache: Path | None) -> None:
        self.warm: Callable[[], None] | None = warm  # dropped once run (it may hold a model's weights)
        self.cache = cache
        #: No compilation had finished into ``cache`` before (the first run on this machine).
        self.first = cache is None or not compiled_before(cache)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="fast-engine-compile", daemon=True)

    def start(self) -> Warmup:
        """Start the thread unless it was started (returns self)."""
        if not self.started:
            self.thread.start()
        return self

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self.thread.ident is not None

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            for attempt in range(ATTEMPTS):
                try:
                    if self.warm is not None:
                        self.warm()
                    break
                except Exception as exc:  # noqa: BLE001 - seen once: a spurious "nested FX trace" error
                    if attempt == ATTEMPTS - 1:
                        raise
                    log.info("fast engine: compiling the fused step failed (%s); trying again", exc)
            if self.cache is not None:
                try:  # the marker only chooses a progress message: an unwritable cache changes nothing else
                    self.cache.mkdir(parents=True, exist_ok=True)
                    (self.cache / READY).write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
                except OSError as exc:
                    log.info("fast engine: cannot mark the compile cache %s (%s)", self.cache, exc)
        except BaseException as exc:  # noqa: BLE001 - reported through .error; the run goes on unfused
            self.error = exc
        finally:
            self.warm = None
            self.seconds = time.perf_counter() - started
            self.done.set()

    @property
    def ok(self) -> bool:
        """Finished without an error."""
        return self.done.is_set() and self.error is None
