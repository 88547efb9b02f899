"""Worker kernels: the code a task runs on a worker, below the workflows and above the libraries.

A kernel is a plain function. Everything it needs comes in as typed arguments: its per-worker
resources (a predictor, the isolated decoder: built once per worker by
:mod:`segpipe.execution.plugins`), its settings and its store, and a typed task record planned on the
driver. It reads its own inputs, writes its own outputs and returns a small typed result, never an
array. Kernels import no Dask (``execution/`` is the one Dask layer) and nothing of the workflows
(``pipeline/``), which plan their tasks and drive them.
"""
