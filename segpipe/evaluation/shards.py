"""Who runs an engine's shards: this process, an executor, or the caller's driver.

The engines (:func:`~segpipe.evaluation.cocoeval.evaluate_coco`,
:func:`~segpipe.evaluation.panoptic.evaluate_panoptic`, :func:`~segpipe.evaluation.semantic.evaluate_semantic`)
cut their work into shards, each one call of a top-level function on one picklable payload, and merge
the results in shard order. They never submit work themselves; they ask a :class:`ShardMap`:

* ``run``, a :class:`ShardMap` from the caller. ``segpipe evaluate`` passes one built on
  :func:`segpipe.execution.runner.run_tasks` (keyed tasks, a bounded window, on Dask or on threads), so
  that Dask is driven from ``segpipe.execution`` only.
* ``client``, any executor whose ``submit(fn, payload)`` returns a future with ``result()`` (a
  ``concurrent.futures`` executor, a ``distributed.Client``), for library callers.
* neither: here, one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from segpipe.errors import InputError

__all__ = ["Executor", "ShardMap", "in_process", "shard_map"]

P = TypeVar("P")
R = TypeVar("R")


class ShardMap(Protocol):
    """``run(fn, payloads) -> [fn(p) for p in payloads]``, in payload order, wherever the calls run."""

    def __call__(self, fn: Callable[[P], R], payloads: Sequence[P], /) -> list[R]:
        """Runs ``fn`` once per payload; returns the results in payload order."""
        ...


class Executor(Protocol):
    """The part of ``concurrent.futures.Executor`` (and ``distributed.Client``) the engines use."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """Starts ``fn(*args)``; returns a future whose ``result()`` is its value (or raises its error)."""
        ...


def in_process(fn: Callable[[P], R], payloads: Sequence[P], /) -> list[R]:
    """Runs the shards here, one after another."""
    return [fn(p) for p in payloads]


@dataclass(frozen=True)
class _Submitted:
    """Every shard submitted to an executor at once; results gathered in payload order."""

    client: Executor

    def __call__(self, fn: Callable[[P], R], payloads: Sequence[P], /) -> list[R]:
        futures = [self.client.submit(fn, p) for p in payloads]
        return [f.result() for f in futures]


def shard_map(client: Executor | None = None, run: ShardMap | None = None) -> ShardMap:
    """The :class:`ShardMap` an engine uses: ``run`` when given, else ``client``'s, else :func:`in_process`.

    Raises:
        InputError: ``client`` has no ``submit``.
    """
    if run is not None:
        return run
    if client is None:
        return in_process
    if not hasattr(client, "submit"):
        raise InputError(f"client {type(client).__name__} has no submit(); pass a dask Client or an executor")
    return _Submitted(client)
