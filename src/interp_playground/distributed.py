"""Several processes, one job: rank and world from ``torchrun``, sharding, reductions, rank-0 duties.

``torchrun --nproc-per-node N -m interp_playground {vectors,generate,eval} ...`` starts N copies of
the command; each reads its place in the job from the environment torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``). A plain process (no torchrun, or ``WORLD_SIZE=1``) is rank 0 of
1: no process group is made and every helper here is a no-op, so single-process code paths stay
exactly as they were.

In a job of several ranks:

* :func:`init` joins the process group (idempotent): NCCL as the default backend when the rank
  runs on CUDA (its device is ``cuda:LOCAL_RANK``), gloo on CPU; barriers, Python objects and CPU
  tensors always go through a gloo group, so control traffic never waits on GPU streams;
* :func:`shard` gives every rank the same deterministic, cost-balanced share of a work list
  (greedy longest-processing-time, ties by index);
* :func:`all_reduce_sum`, :func:`all_gather_object`, :func:`broadcast_object` and :func:`barrier`
  are the collectives the stages need; :func:`agree` and :func:`on_main` turn a one-line
  ``UserError`` raised on some ranks into the same error on every rank, so a refused job stops
  cleanly everywhere instead of leaving ranks waiting in a collective;
* only rank 0 (:func:`is_main`) writes shared files, judges, summarises, plots and reports.

The process-group timeout is ``INTERP_PLAYGROUND_DIST_TIMEOUT`` seconds (default three hours):
ranks that finish their share early wait that long at the final barrier for the slowest one.
"""

from __future__ import annotations

import datetime as _dt
import heapq
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import UserError

T = TypeVar("T")

#: Environment variable holding the process-group timeout in seconds.
TIMEOUT_ENV = "INTERP_PLAYGROUND_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 3 * 3600
#: Test hook (never set it outside tests): ``"RANK:N"`` makes rank RANK exit abruptly after its
#: N-th journaled batch of a sweep, as a killed process would.
TEST_EXIT_ENV = "INTERP_PLAYGROUND_TEST_EXIT_AFTER_BATCHES"

# the gloo group for control traffic (None: the default group is gloo already), and whether
# this module made the default group (then teardown destroys it)
_STATE: dict[str, Any] = {"control": None, "owned": False}


@dataclass(frozen=True)
class Job:
    """This process's place in the job: ``rank`` of ``world_size``; ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the rank that writes shared files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one rank."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def job() -> Job:
    """The job as torchrun describes it in the environment (rank 0 of 1 without torchrun)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return Job(rank=rank, world_size=world, local_rank=local)


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return job().rank


def world_size() -> int:
    """Number of ranks in the job (1 without torchrun)."""
    return job().world_size


def is_main() -> bool:
    """Whether this process is rank 0 (always, without torchrun)."""
    return job().is_main


def local_device(device: str | None) -> str | None:
    """The device this rank should load the model on.

    In a job of several ranks, ``None`` or a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (``cpu``
    when no GPU is visible); an explicit device (``cpu``, ``cuda:3``) is kept. A single process
    gets ``device`` back unchanged.
    """
    j = job()
    if not j.distributed:
        return device
    if device is None or device == "cuda":
        import torch

        if torch.cuda.is_available():
            return f"cuda:{j.local_rank % max(torch.cuda.device_count(), 1)}"
        if device == "cuda":
            raise UserError("--device cuda asked for, but no CUDA device is visible")
        return "cpu"
    return device


def _timeout() -> _dt.timedelta:
    seconds = _env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if seconds < 1:
        raise UserError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {seconds}")
    return _dt.timedelta(seconds=seconds)


def init(device: str | None = None, *, device_map: Any = None) -> str | None:
    """Join the job's process group (once; later calls only resolve the device) and return this
    rank's device (:func:`local_device`). Without torchrun nothing happens.

    ``device_map`` (one process over several GPUs) is refused in a job of several ranks: there each
    rank holds a whole model on its own GPU."""
    j = job()
    if device_map is not None and j.distributed:
        raise UserError("--device-map spreads one process over several GPUs; under torchrun each rank "
                        "loads the whole model on its own GPU: drop --device-map or run one process")
    resolved = local_device(device)
    if not j.distributed:
        return resolved
    import torch
    import torch.distributed as dist

    if not dist.is_available():  # pragma: no cover - every supported build has it
        raise UserError("this PyTorch build has no torch.distributed; run a single process")
    if not dist.is_initialized():
        cuda = resolved is not None and resolved.startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(resolved))  # type: ignore[arg-type]
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=_timeout())
        _STATE["owned"] = True
    if _STATE["control"] is None and dist.get_backend() != "gloo":
        _STATE["control"] = dist.new_group(backend="gloo", timeout=_timeout())
    return resolved


def _dist() -> Any:
    """``torch.distributed``, the process group joined (for the collectives below)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        init()
    return dist


def _control() -> Any:
    return _STATE["control"]  # None selects the default group, which is gloo then


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if job().distributed:
        _dist().barrier(group=_control())


def all_reduce_sum(tensor: Any) -> Any:
    """Sum ``tensor`` over the ranks, in place; returns it (unchanged in a single process).

    CUDA tensors go through the default (NCCL) group, CPU tensors through gloo.
    """
    if not job().distributed:
        return tensor
    dist = _dist()
    group = None if tensor.is_cuda else _control()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    j = job()
    if not j.distributed:
        return [obj]
    out: list[Any] = [None] * j.world_size
    _dist().all_gather_object(out, obj, group=_control())
    return out


def broadcast_object(obj: T | None, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not job().distributed:
        return obj  # type: ignore[return-value]
    box = [obj]
    _dist().broadcast_object_list(box, src=src, group=_control())
    return box[0]  # type: ignore[return-value]


def agree(fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if it raised a ``UserError`` on any rank, raise that error (the
    lowest rank's) on every rank. Returns this rank's result. Other exceptions propagate as they
    are (torchrun then stops the job)."""
    if not job().distributed:
        return fn()
    result: Any = None
    error = None
    try:
        result = fn()
    except UserError as exc:
        error = str(exc)
    errors = [e for e in all_gather_object(error) if e is not None]
    if errors:
        raise UserError(errors[0])
    return result  # type: ignore[no-any-return]


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank (it must pickle); a
    ``UserError`` raised there is raised on every rank."""
    j = job()
    if not j.distributed:
        return fn()
    payload: tuple[str, Any] = ("ok", None)
    if j.is_main:
        try:
            payload = ("ok", fn())
        except UserError as exc:
            payload = ("error", str(exc))
    kind, value = broadcast_object(payload)
    if kind == "error":
        raise UserError(value)
    return value  # type: ignore[no-any-return]


def shard(costs: Sequence[float], rank: int | None = None, world: int | None = None) -> list[int]:
    """This rank's share of ``len(costs)`` work items: indices in increasing order.

    Greedy longest-processing-time: items in order of decreasing cost (ties: lower index first)
    each go to the rank with the least assigned cost so far (ties: lower rank). Every rank
    computes the same assignment from the same costs; the loads differ by at most one item's cost.
    """
    j = job()
    rank = j.rank if rank is None else rank
    world = j.world_size if world is None else world
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if world == 1:
        return list(range(len(costs)))
    heap = [(0.0, r) for r in range(world)]
    mine: list[int] = []
    for i in sorted(range(len(costs)), key=lambda k: (-float(costs[k]), k)):
        load, r = heapq.heappop(heap)
        if r == rank:
            mine.append(i)
        heapq.heappush(heap, (load + float(costs[i]), r))
    return sorted(mine)


def teardown() -> None:
    """Leave the process group if :func:`init` made it (no-op otherwise)."""
    if not _STATE["owned"]:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _STATE.update(control=None, owned=False)


def exit_for_test(batches_done: int) -> None:
    """Test hook: exit abruptly (no cleanup, like a killed process) when :data:`TEST_EXIT_ENV` names
    this rank and ``batches_done`` has reached its count. Does nothing unless a test sets it."""
    spec = os.environ.get(TEST_EXIT_ENV)
    if not spec:
        return
    who, _, count = spec.partition(":")
    if int(who) == rank() and batches_done >= int(count or 1):
        os._exit(17)


__all__ = ["DEFAULT_TIMEOUT_S", "Job", "TEST_EXIT_ENV", "TIMEOUT_ENV", "agree", "all_gather_object",
           "all_reduce_sum", "barrier", "broadcast_object", "exit_for_test", "init", "is_main", "job",
           "local_device", "on_main", "rank", "shard", "teardown", "world_size"]
