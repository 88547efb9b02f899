"""Gives every worker of a client its resources for the duration of a run (the plugin, or this process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from segpipe.execution.cluster import owns_workers
from segpipe.execution.plugins import PLUGIN_NAME, ResourceSetup, local_resources


@contextmanager
def provide_resources(client: Any, setup: ResourceSetup[Any]) -> Iterator[None]:
    """Builds ``setup``'s resources on every worker of ``client`` (a plugin) for the duration of the block.

    In-process (an :class:`~segpipe.execution.cluster.InProcessClient`) they are built here, before the
    block runs: a model that cannot be loaded fails before anything is written.

    Raises:
        SegpipeError: a worker could not build them (the worker's own one-line error).
    """
    if not hasattr(client, "register_plugin"):
        local_resources(setup)
        yield
        return
    # lazy: distributed costs 0.7 s to import; a client that registers plugins has imported it already
    from segpipe.execution.worker_plugin import ResourcePlugin

    # the embedded cluster's workers (not a user's) skip finalisation at exit: see install_fast_exit
    client.register_plugin(ResourcePlugin(setup, fast_exit=owns_workers(client)))
    try:
        yield
    finally:
        try:
            client.unregister_worker_plugin(PLUGIN_NAME)
        except Exception:  # the cluster may be going away; nothing to undo then
            pass
