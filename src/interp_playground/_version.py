"""The package version (one place; `interp_playground.__version__` re-exports it)."""

__version__ = "0.1.0"
