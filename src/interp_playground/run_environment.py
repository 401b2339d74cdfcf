"""What a run records about where it ran: versions, the git commit, vector-file hashes, and URLs
with their credentials removed (for ``config.json``)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._version import __version__
from .io import sha256_file


def git_commit() -> str | None:
    """The commit of the checkout the package runs from, if it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
            text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_info() -> dict[str, Any]:
    """Versions of the pieces that change results, and the CPU's: its vector instructions and torch's
    thread count pick the kernels, so a sampled draw near a tie can fall the other way on another
    machine (a run on the CPU is reproduced exactly where these match)."""
    import torch
    import transformers

    return {
        "interp_playground": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()},
        "git_commit": git_commit(),
    }


def vector_hashes(paths: dict[str, Path]) -> dict[str, str]:
    """SHA-256 of each vector file that a run uses."""
    return {name: sha256_file(path) for name, path in paths.items() if Path(path).exists()}


__all__ = ["environment_info", "git_commit", "vector_hashes"]
