"""Run a plan's tasks on a client with a bounded number in flight, reporting progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

#: progress(done, total, failed)
Progress = Callable[[int, int, int], None]


def run_tasks(
    client: Any,
    fn: Callable[..., Any],
    tasks: Iterable[tuple[str, tuple[Any, ...]]],
    *,
    total: int,
    max_in_flight: int = 8,
    progress: Progress | None = None,
    resources: dict[str, float] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Submits ``fn(*args)`` for each ``(key, args)``, keeping at most ``max_in_flight`` running.

    Tasks are consumed lazily, so the driver holds only the arguments of tasks in flight: memory is
    bounded by the shard, not the dataset. Results are yielded as they complete.

    Args:
        client: A ``distributed.Client`` or :class:`~segpipe.execution.cluster.InProcessClient`.
        fn: A picklable top-level function.
        tasks: ``(deterministic key, args)`` pairs.
        total: Number of tasks (for progress).
        max_in_flight: Submission window.
        progress: Called after each completion.
        resources: Dask resources each task needs (``{"GPU": 1}``): it runs only on workers that
            advertise them. Ignored in-process.

    Yields:
        ``(key, result)``. The first task error is raised (remaining tasks are cancelled).
    """
    it = iter(tasks)
    if not hasattr(client, "scheduler") and getattr(client, "threads", 1) > 1:
        yield from _run_threaded(client.threads, fn, it, total=total, max_in_flight=max_in_flight,
                                 progress=progress)
    elif not hasattr(client, "scheduler"):  # in-process: run one after another
        yield from _run_in_order(client, fn, it, total=total, progress=progress)
    else:
        yield from _run_on_cluster(client, fn, it, total=total, max_in_flight=max_in_flight, progress=progress,
                                   resources=resources)


def _run_in_order(client: Any, fn: Callable[..., Any], it: Iterator[tuple[str, tuple[Any, ...]]], *,
                  total: int, progress: Progress | None) -> Iterator[tuple[str, Any]]:
    """In-process tasks one after another (an :class:`~segpipe.execution.cluster.InProcessClient`)."""
    done = 0
    for key, args in it:
        result = client.submit(fn, *args).result()
        done += 1
        if progress:
            progress(done, total, 0)
        yield key, result


def _run_on_cluster(client: Any, fn: Callable[..., Any], it: Iterator[tuple[str, tuple[Any, ...]]], *,
                    total: int, max_in_flight: int, progress: Progress | None,
                    resources: dict[str, float] | None) -> Iterator[tuple[str, Any]]:
    """Tasks on a ``distributed.Client``, at most ``max_in_flight`` submitted, results as they complete."""
    # lazy: distributed costs 0.7 s to import; in-process runs never need it
    from distributed import as_completed

    pending: dict[Any, str] = {}
    done = 0

    def submit_next() -> bool:
        try:
            key, args = next(it)
        except StopIteration:
            return False
        fut = client.submit(fn, *args, key=key, pure=False, **({"resources": resources} if resources else {}))
        pending[fut] = key
        return True

    for _ in range(max_in_flight):
        if not submit_next():
            break
    ac = as_completed(list(pending))
    try:
        for fut in ac:
            key = pending.pop(fut)
            result = fut.result()  # raises the task's own exception
            fut.release()
            done += 1
            if progress:
                progress(done, total, 0)
            yield key, result
            if submit_next():
                newest = next(reversed(pending))
                ac.add(newest)
    except BaseException:
        for f in list(pending):
            f.cancel()
        raise


def _run_threaded(
    threads: int,
    fn: Callable[..., Any],
    it: Iterator[tuple[str, tuple[Any, ...]]],
    *,
    total: int,
    max_in_flight: int,
    progress: Progress | None,
) -> Iterator[tuple[str, Any]]:
    """In-process tasks on ``threads`` threads of this process, as a worker with that many threads.

    Results are yielded as they complete; the first task error is raised after the tasks not yet
    started are cancelled (running ones finish: a thread cannot be stopped). Stopping the iteration
    early does the same.
    """
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="segpipe-task")
    pending: dict[Future[Any], str] = {}
    done = 0

    def submit_next() -> bool:
        try:
            key, args = next(it)
        except StopIteration:
            return False
        pending[pool.submit(fn, *args)] = key
        return True

    try:
        for _ in range(max(threads, max_in_flight)):
            if not submit_next():
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                key = pending.pop(fut)
                result = fut.result()  # raises the task's own exception
                done += 1
                if progress:
                    progress(done, total, 0)
                yield key, result
                submit_next()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
