"""The command-line front ends (``interp-playground <command>``), thin layers over the stages and
the orchestrator. Each imports the package modules that pull in torch or matplotlib (models,
engines, stages, the orchestrator) inside its function, after its options are parsed and checked,
so a bad option costs no torch import: the one kind of import below a module's top in this package
(besides the judge's local backend and the fast engine's Triton code, deferred for the same reason)."""
