"""Execution on Dask: the only layer that imports dask/distributed at module level."""
