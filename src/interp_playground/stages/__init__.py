"""The stages of an evaluation, side by side: each reads what the earlier stages wrote (through
:class:`~interp_playground.rundir.RunDir` and :mod:`interp_playground.rows`) and writes its own
files; none imports another. :mod:`interp_playground.pipeline` sequences them.

| stage | module | writes |
|---|---|---|
| vectors | :mod:`.vectors` (diagnostics plot: :mod:`.vector_plots`) | ``steering_vectors_{t}.pt`` |
| generate | :mod:`.generate` | ``generations_{stem}.json``, ``tokens_{stem}.npz`` |
| measures | :mod:`.measures` | ``measures_{stem}.npz`` |
| judge | :mod:`.judge` | ``judged_{stem}.json`` / ``.csv`` |
| summarize | :mod:`.summarize` | ``summary.json`` |
| plots | :mod:`.plots` (fluency and projection: :mod:`.measure_plots`) | ``plots/*.png`` |
| report | :mod:`.report` (tables: :mod:`.report_table`) | ``report.html`` |
"""
