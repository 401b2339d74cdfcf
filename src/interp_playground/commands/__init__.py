"""Command-line front ends of the pipeline stages (argument parsing, progress, exit codes)."""
