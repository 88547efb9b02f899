"""The viewer: rendering kernels (:mod:`.render`, :mod:`.colors`), the HTML writer (:mod:`.html`) and a
local server for its folder (:mod:`.serve`). Pages open from disk; nothing here starts Dask or reads
a dataset: :mod:`segpipe.pipeline.view` does that.
"""
