"""The pre-label kernels: one task decodes an image (a scene block, a volume slice or slab), predicts,
writes its own arrays and its receipt. Records in :mod:`.tasks`, resources in :mod:`.resources`, the
batch a Dask task runs in :mod:`.batch`.
"""
