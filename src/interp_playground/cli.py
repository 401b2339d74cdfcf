"""The ``interp-playground`` command: one entry point, a subcommand per pipeline stage.

Each subcommand lives in :mod:`interp_playground.commands` (or the judge package) as a
``main(argv) -> int`` function; this module only dispatches and turns a :class:`UserError` into a
one-line ``error: ...`` message with exit status 2.
"""

from __future__ import annotations

import errno
import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from . import distributed
from ._version import __version__
from .errors import UserError

# subcommand -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "vectors": ("interp_playground.commands.vectors", "main", "extract activations and write steering vectors"),
    "generate": ("interp_playground.commands.generate", "main", "generate steered answers for a grid of conditions"),
    "judge": ("interp_playground.commands.judge", "judge_main", "score answers with an LLM judge"),
    "measures": ("interp_playground.commands.measures", "main",
                 "judge-free measures of a run's answers: NLL, repetition, projections"),
    "eval": ("interp_playground.commands.eval", "main", "the full EM evaluation: generate, judge, summarise, plot, report"),
    "plots": ("interp_playground.commands.eval", "plots_main", "remake the plots of a run directory from its files"),
    "report": ("interp_playground.commands.eval", "report_main", "remake report.html of a run directory"),
    "demo": ("interp_playground.commands.eval", "demo_main", "the whole pipeline offline on the embedded SmolLM2-135M"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: interp-playground <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `interp-playground <command> --help` for a command's options."]
    return "\n".join(lines)


#: errno values of a failed write that the user fixes outside the program (disk, quota, permissions).
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class _Interrupts:
    """The SIGINT / SIGTERM handler of a command: the first signal stops it like Ctrl-C (finished work
    saved, the exact resume command printed); later ones are ignored, so a second Ctrl-C while the
    first unwinds (closing the judge's connections, say) cannot turn the way out into a traceback.
    Being installed instead of Python's own handler, it also keeps asyncio from installing its own."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.seen += 1
        if self.seen == 1:
            raise KeyboardInterrupt()


def run_command(name: str, argv: Sequence[str], *, exiting: bool = False) -> int:
    """Run subcommand ``name`` with ``argv``; a ``UserError`` becomes ``error: ...`` and exit 2.

    SIGTERM is handled like Ctrl-C: both print that finished work is saved and how to resume
    (exit 130). A write that fails for lack of space, quota or permission is one ``error:`` line too.
    Under torchrun each rank runs the command (see :mod:`interp_playground.distributed`); the
    process group, if the command joined one, is left on the way out. ``exiting``: the process ends
    after this command (the console script), so after an interrupt the handler stays, deaf to more."""
    module_name, func_name, _ = COMMANDS[name]
    previous = None
    if threading.current_thread() is threading.main_thread():
        handler = _Interrupts()
        previous = (signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler))
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(list(argv)) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if exiting:  # deaf to further signals until the process has exited (at the OS level: Python
            previous = None  # puts its own handlers back to the default while it shuts down)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        resume = exc.args[0] if exc.args and isinstance(exc.args[0], str) else None
        hint = f"resume with: {resume}" if resume else "rerun the same command to resume"
        print(f"interrupted; finished work is saved; {hint}", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; finished work is saved: fix this and rerun the same "
              "command to resume", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
        if previous is not None:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])


def main(argv: Sequence[str] | None = None, *, exiting: bool | None = None) -> int:
    """Entry point of the ``interp-playground`` console script (no command: usage on stderr, exit 2).

    ``exiting``: the process ends when this returns (default: when ``argv`` is None, as for the
    console script), so after an interrupt further signals stay ignored."""
    exiting = argv is None if exiting is None else exiting
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"interp-playground {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:], exiting=exiting)


if __name__ == "__main__":
    sys.exit(main())
