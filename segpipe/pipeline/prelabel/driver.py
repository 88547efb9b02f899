"""The pre-label workflow: check, plan, run the batches on the cluster, count, report.

The driver never decodes pixels: it lists the source, plans keyed tasks, submits them in batches
(:func:`~segpipe.kernels.prelabel.batch.prelabel_batch` on the workers, through
:mod:`segpipe.execution`) and counts the receipts that come back.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe import __version__
from segpipe.execution.cluster import ClusterSpec, use_client, worker_count
from segpipe.execution.gpus import GPU_RESOURCE, advertises_gpu
from segpipe.execution.plugins import WithResources
from segpipe.execution.resources import provide_resources
from segpipe.execution.runner import Progress, run_tasks
from segpipe.kernels.prelabel.batch import prelabel_batch
from segpipe.kernels.prelabel.prompted import PromptedSetup, prompted_batch
from segpipe.kernels.prelabel.resources import PredictorSetup
from segpipe.kernels.prelabel.tasks import SLAB, Failure, PrelabelSettings, PrelabelTask, Receipt, TaskResult
from segpipe.pipeline.prelabel.config import (
    ModelPlan,
    check_request,
    output_settings,
    predictor_options,
    read_model,
)
from segpipe.pipeline.prelabel.plan import batch_key, batch_tasks, plain_tasks, plan_tasks
from segpipe.pipeline.prelabel.prompts import plan_prompted
from segpipe.pipeline.prelabel.report import (
    FailedItem,
    ImageCounts,
    ItemCounts,
    ModelSummary,
    PrelabelReport,
    StageSeconds,
)
from segpipe.pipeline.prelabel.request import PrelabelRequest
from segpipe.pipeline.prelabel.source import (
    SourceListing,
    estimate_prelabel_s,
    ingest,
    list_source,
    merge_entries,
    reuse_manifest,
)
from segpipe.pipeline.prelabel.store import (
    check_out,
    discard_on_error,
    finish_replacement,
    out_location,
    place_in_stacks,
    prepare_scenes,
    prepare_store,
    tasks_to_run,
)
from segpipe.storage import ledger as ledgers
from segpipe.storage.atomic import write_json_atomic
from segpipe.storage.manifest import manifest_bytes, write_manifest, write_stamp
from segpipe.storage.manifest_table import ManifestTable
from segpipe.storage.zarrfast import forget_metadata
from segpipe.storage.zarrstore import ZarrStore

#: log(line): a line for the user (stderr), e.g. where the dashboard is.
Log = Callable[[str], None]


def prelabel(req: PrelabelRequest, cluster: ClusterSpec | None = None, progress: Progress | None = None,
             log: Log | None = None, client: Any = None) -> dict[str, Any]:
    """Pre-labels a collection into a store; returns the run report (also ``STORE/.segpipe/runs/<id>.json``).

    The report as a JSON object (:meth:`PrelabelReport.to_json`); :func:`run_prelabel` returns it typed.

    Raises:
        SegpipeError: unreadable source, bad model, store conflicts (nothing is written then).
    """
    return run_prelabel(req, cluster, progress, log, client).to_json()


@dataclass(frozen=True)
class _Workers:
    """Where the tasks run: the cluster, tasks at once per worker, and the embedded workers (0: none)."""

    cluster: ClusterSpec
    threads: int
    n_workers: int

    def slots(self, client: Any) -> int:
        """Tasks the workers run at once (a user's cluster: one per worker, at least 4 workers)."""
        n_work = self.n_workers or worker_count(client)
        if self.cluster.scheduler:
            # An external cluster may still be scaling up: plan for at least a few workers.
            return max(n_work, 4)
        # each worker of ours runs `threads` tasks at once (an external cluster's own threads are unknown)
        return n_work * self.threads


def run_prelabel(req: PrelabelRequest, cluster: ClusterSpec | None = None, progress: Progress | None = None,
                 log: Log | None = None, client: Any = None) -> PrelabelReport:
    """Pre-labels a collection into a store; returns the typed run report (written to the store too).

    Args:
        req: What to do.
        cluster: Where (default: an embedded cluster sized for the job, or this process).
        progress: ``progress(done, total, failed)`` as batches finish.
        log: Lines for the user (the dashboard's address, running in this process).
        client: An open client to run on (left open), instead of one for ``cluster``.

    Raises:
        SegpipeError: unreadable source, bad model, store conflicts (nothing is written then).
    """
    t_start = time.perf_counter()
    # On a machine with GPUs, one worker per GPU, pinned to it (a CPU device keeps the CPU workers).
    cluster = (cluster or ClusterSpec()).for_model(req.device, req.gpus)
    check_request(req)
    # Where the run will write, first: an --out over an input or over something segpipe did not make is
    # refused before the model is even read (prepare_store checks the rest once the config is known).
    check_out(req)
    # --prompts: a SAM model turns the boxes into masks (the boxes are matched to the source listed here)
    prompted = plan_prompted(req) if req.prompts is not None else None
    model = prompted.model if prompted else read_model(req)
    forget_metadata()  # in-process runs write from this process: nothing cached by an earlier run counts
    workers = _workers(cluster, req.threads)
    setup: PredictorSetup | PromptedSetup = prompted.setup if prompted else \
        PredictorSetup(model.ref, predictor_options(req, model.meta, model.members))
    run_id = _run_id()
    prepare_store(req, model.store_attrs(), model.cfg_hash, dry_run=True)  # refused before a cluster starts
    # The source is listed before any cluster starts: an empty folder is one line at once, and a small
    # job runs in this process instead of waiting for workers (ClusterSpec.sized).
    listing = prompted.listing if prompted else list_source(req.source, limit=req.limit)
    checked_ns = time.time_ns()  # the files' contents are checked from now on (see write_stamp)
    # --resume of a local store: the entries of unchanged files are taken from its manifest, so only
    # new or changed files are hashed on the workers.
    full = listing
    reused, listing = _reusable(req, listing) if not prompted else (ManifestTable(), listing)
    staging: list[Path] = []  # the new store's staging folder when it replaces an earlier one (--overwrite)
    plan = None
    if len(reused) and not len(listing):
        # Every file is unchanged: planned here, and when every task holds a trusted receipt no cluster
        # starts and no model is loaded (only untrusted receipts, which are redone anyway, may go).
        plan = _plan(req, model, merge_entries(req.source, reused, ManifestTable()), staging, checked_ns,
                     same_manifest=_manifest_lines(req) == len(reused))
    if plan is not None and not plan.todo:
        outcome = _all_done(plan)
        if log:
            log(f"nothing left to run: all {plan.planned} tasks were done by an earlier run")
    else:
        if client is None:
            workers = _sized(workers, full, log)
        del full  # the listing's names (≈ 130 B an image) are not needed past this point
        # The model is loaded on the workers before the store is touched: a checkpoint the workers cannot
        # load fails the run with its one line and leaves an existing store as it was (even with --overwrite).
        with discard_on_error(staging), use_client(workers.cluster, client) as client, \
                provide_resources(client, setup):
            run = _Run(req, model, workers, setup, client, progress)
            dashboard = getattr(client, "dashboard_link", None)
            if log and dashboard:
                log(f"dask dashboard: {dashboard}")
            if plan is None:
                plan = _plan(req, model, _measure(req, client, listing, reused), staging, checked_ns)
            del listing, reused
            outcome = run.execute(plan, log)
    plan = None  # its tasks and their manifest entries go before the ledger is packed (the run's peak memory)
    _pack_ledger(outcome.store, run_id, log)
    report = _report(run_id, req, model, workers, outcome, t_start)
    if prompted:
        report = report.model_copy(update={"prompts": prompted.counts})
    if outcome.store.location is None:
        (outcome.store.private / "runs").mkdir(exist_ok=True)
        write_json_atomic(outcome.store.private / "runs" / f"{run_id}.json", report.model_dump(mode="json"))
    else:  # the same JSON as a local store's report, in one PUT
        outcome.store.write_private(f"runs/{run_id}.json",
                                    (json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False)
                                     + "\n").encode())
    # under --on-error fail any failure makes the new run incomplete
    if staging and finish_replacement(staging[0], req, outcome.stopped or (req.on_error == "fail"
                                                                           and bool(outcome.failed))):
        report = report.model_copy(update={"earlier_store_kept": True})
    return report


def _measure(req: PrelabelRequest, client: Any, listing: SourceListing,
             reused: ManifestTable) -> ManifestTable:
    """The manifest: ``listing`` measured and hashed on the workers, merged with the ``reused`` entries."""
    measured = ingest(req.source, client, limit=req.limit, listing=listing) if len(listing) else ManifestTable()
    return merge_entries(req.source, reused, measured) if len(reused) else measured


def _workers(cluster: ClusterSpec, threads: int | None) -> _Workers:
    """The workers ``cluster`` gives a model run, with ``--threads`` (default: the cores left to each)."""
    n_workers = cluster.n_workers() if not cluster.scheduler else 0
    # Threads per worker run images at once, each forward pass on one torch thread (not one image on
    # ``threads`` torch threads): the stored bytes then do not depend on workers or threads.
    n_threads = cluster.worker_threads(threads)
    if not cluster.scheduler:
        cluster = dataclasses.replace(cluster, threads_per_worker=n_threads)
    return _Workers(cluster, n_threads, n_workers)


def _sized(workers: _Workers, listing: SourceListing, log: Log | None) -> _Workers:
    """In this process when the job is too small to gain from a cluster the user did not ask for."""
    sized = workers.cluster.sized(estimate_prelabel_s(listing))
    if not sized.in_process() or workers.cluster.in_process():
        return workers
    if log:
        log(f"{len(listing)} images: running in this process (a cluster would take longer to start; "
            "pass --workers N for one)")
    return _Workers(sized, sized.threads_per_worker, 0)


def _reusable(req: PrelabelRequest, listing: SourceListing) -> tuple[ManifestTable, SourceListing]:
    """The manifest entries ``--resume`` of a local store may reuse, and the listing of the rest to hash."""
    if not req.resume or req.overwrite or out_location(req) is not None:
        return ManifestTable(), listing
    manifest = Path(req.out) / ".segpipe" / "manifest.jsonl"
    if not manifest.is_file():
        return ManifestTable(), listing
    return reuse_manifest(listing, manifest)


@dataclass(frozen=True)
class _Plan:
    """A run's store and tasks, planned on the driver.

    Attributes:
        store: The store written (a staging folder when it replaces an earlier one).
        kinds: How many images, scenes and volumes the manifest lists.
        refused: The items refused at ingest (a failure each).
        planned: How many tasks the collection has (the tasks themselves are not kept: at 100k images
            they held their images' tasks alive beside the restacked ones).
        todo: The planned tasks without a trusted receipt (all of them in a new store).
    """

    store: ZarrStore
    kinds: ItemKinds
    refused: list[Failure]
    planned: int
    todo: list[PrelabelTask]


def _manifest_lines(req: PrelabelRequest) -> int:
    """How many lines the manifest of a local ``--out`` has (-1: none, or unreadable)."""
    try:
        with open(Path(req.out) / ".segpipe" / "manifest.jsonl", "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except (OSError, TypeError):
        return -1


def _plan(req: PrelabelRequest, model: ModelPlan, entries: ManifestTable, staging: list[Path],
          checked_ns: int, *, same_manifest: bool = False) -> _Plan:
    """Prepares the store, writes the manifest, plans the tasks and finds those left to run.

    With ``same_manifest`` (every entry of the store's manifest reused as it is, none added) the
    manifest is not written again, only its check time (``write_stamp``): 1-2 s at 100k images.
    """
    store = prepare_store(req, model.store_attrs(), model.cfg_hash)
    if store.location is not None:  # object storage: written in place (no staging: see prepare_store)
        store.write_private("manifest.jsonl", manifest_bytes(entries))
    else:
        if store.path != req.out:
            staging.append(store.path)
        if not same_manifest or store.path != req.out:
            write_manifest(store.private / "manifest.jsonl", entries)
        write_stamp(store.private / "manifest.jsonl", checked_ns)
    ledger = store.ledger()
    ledger.ensure()
    planned = plan_tasks(entries, model.cfg_hash, slab=SLAB if model.dims == 3 else 0)
    # a refused item is never held in columns (it has an error): its entry is among the table's whole ones
    refused = [Failure(key="", image_id=e.id, file=e.file, reason=e.error) for e in entries.odd_rows().values()
               if e.kind == "invalid"]
    kinds = ItemKinds(images=entries.count("image"), scenes=entries.count("scene"), volumes=entries.count("volume"))
    return _Plan(store, kinds, refused, len(planned), tasks_to_run(store, ledger, planned))


def _pack_ledger(store: ZarrStore, run_id: str, log: Log | None) -> None:
    """Packs the ledger's loose receipts into one file for this run once there are many
    (:data:`~segpipe.storage.ledger.PACK_MIN`).

    A large store's ``--resume`` and ``fsck`` then read one file instead of one per task. The loose
    receipts of an earlier, interrupted run are packed too. Packing is an optimisation: the receipts
    are durable as loose files already, so a failure to pack leaves them so and the run stands.
    """
    ledger = store.ledger()
    try:
        if ledger.loose_count() >= ledgers.PACK_MIN:
            ledger.compact(run_id)
    except Exception as e:  # noqa: BLE001 - a full disk, an object store's refusal: the run's work stands
        if log:
            log(f"the ledger's receipts stay loose files (packing them failed: {e})")


def _all_done(plan: _Plan) -> RunOutcome:
    """The outcome of a run that found every task done (no cluster started)."""
    n = plan.planned
    return RunOutcome(plan.store, plan.kinds, n, 0, n, 0, 0, StageSeconds(decode=0.0, infer=0.0, write=0.0),
                      [], False, 0.0, None)


@dataclass(frozen=True)
class ItemKinds:
    """How many items of each kind a manifest lists (the report's counts: the entries are not kept)."""

    images: int
    scenes: int
    volumes: int


@dataclass(frozen=True)
class RunOutcome:
    """What a run did, for its report.

    Attributes:
        store: The store written (a staging folder when it replaces an earlier one).
        kinds: How many images, scenes and volumes the manifest lists.
        planned: Tasks planned.
        unplanned: Block tasks of scenes that failed (not run; each scene counts once as failed).
        skipped: Tasks finished by an earlier run (``--resume``).
        todo: Tasks to run this time.
        done: Tasks finished now.
        stage_s: Their seconds per stage, summed (not rounded).
        failed: Items refused at ingest, scenes that failed, then failed tasks.
        stopped: The run stopped at a failure (``--on-error fail``).
        run_s: Seconds of the task phase.
        dashboard: The Dask dashboard's address, if any.
    """

    store: ZarrStore
    kinds: ItemKinds
    planned: int
    unplanned: int
    skipped: int
    todo: int
    done: int
    stage_s: StageSeconds
    failed: list[Failure]
    stopped: bool
    run_s: float
    dashboard: str | None


@dataclass
class _Tally:
    """The results of the batches, counted as they come.

    Only counts and stage sums are kept, not the receipts: at 100k images they were the driver's
    largest per-image memory (each receipt is in the store's ledger anyway).
    """

    fail_fast: bool
    failed: list[Failure]
    done: int = 0
    decode_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    finished: int = 0
    stopped: bool = False

    def add(self, results: Iterable[TaskResult]) -> None:
        for r in results:
            self.finished += 1
            if isinstance(r, Receipt):
                self.done += 1
                # summed in arrival order, as the list of receipts was: the same float sums
                self.decode_s += r.timings.decode
                self.infer_s += r.timings.infer
                self.write_s += r.timings.write
                continue
            self.failed.append(r)
            self.stopped = self.stopped or self.fail_fast

    def stage_s(self) -> StageSeconds:
        """The summed seconds per stage."""
        return StageSeconds(decode=self.decode_s, infer=self.infer_s, write=self.write_s)


@dataclass
class _Run:
    """One run on an open client whose workers hold the predictor."""

    req: PrelabelRequest
    model: ModelPlan
    workers: _Workers
    setup: PredictorSetup | PromptedSetup
    client: Any
    progress: Progress | None

    def execute(self, plan: _Plan, log: Log | None) -> RunOutcome:
        """Prepares the scenes and stacks of ``plan``'s tasks left to run, and runs them in batches."""
        req, model = self.req, self.model
        dashboard = getattr(self.client, "dashboard_link", None)
        store, planned, todo = plan.store, plan.planned, plan.todo
        skipped = planned - len(todo)
        scenes = prepare_scenes(store, todo, req, model.meta)
        todo = place_in_stacks(store, scenes.todo, model.meta, model.dims, req.probs)
        tally = _Tally(req.on_error == "fail", plan.refused + scenes.failed)
        t_run = time.perf_counter()
        for results in self._batches(store, todo):
            tally.add(results)
            if self.progress:
                self.progress(skipped + tally.finished, planned, len(tally.failed))
            if tally.stopped:
                break
        return RunOutcome(store, plan.kinds, planned, scenes.unplanned, skipped, len(todo), tally.done,
                          tally.stage_s(), tally.failed, tally.stopped, time.perf_counter() - t_run, dashboard)

    def _batches(self, store: ZarrStore, todo: list[PrelabelTask]) -> Iterator[list[TaskResult]]:
        """Runs ``todo`` in batches on the workers; yields each batch's results as it finishes."""
        slots = self.workers.slots(self.client)
        batches = batch_tasks(todo, slots)
        settings = PrelabelSettings(ZarrStore(store.target), output_settings(self.req),
                                    stop_on_failure=self.req.on_error == "fail")
        # a batch's table rows are made plain tasks as it is sent: only the batches in flight hold entries
        tasks = ((batch_key([t.key for t in b]), (settings, plain_tasks(b))) for b in batches)
        # On a cluster with GPU workers (ours, or a user's `dask worker --resources GPU=1`), model tasks
        # run only there; on the CPU they run anywhere.
        gpu_only = {GPU_RESOURCE: 1.0} if self.req.device != "cpu" and advertises_gpu(self.client) else None
        kernel: Any = prompted_batch if isinstance(self.setup, PromptedSetup) else prelabel_batch
        for _, results in run_tasks(self.client, WithResources(kernel, self.setup), tasks,
                                    total=len(batches), max_in_flight=max(2, 2 * max(1, slots)),
                                    resources=gpu_only):
            yield results


def _run_id() -> str:
    """A run report's name: its start (local time, as before) to the microsecond, then a random suffix.

    The names sort in the order the runs started (``read_runs`` and the report page take the last as the
    newest): two runs within one second, as a quick ``--resume`` after a small run is, were ordered by
    their random suffixes when the name stopped at the second.
    """
    now = time.time_ns()
    return (time.strftime("%Y%m%dT%H%M%S", time.localtime(now // 1_000_000_000))
            + f".{now // 1000 % 1_000_000:06d}-{uuid.uuid4().hex[:6]}")


def _report(run_id: str, req: PrelabelRequest, model: ModelPlan, workers: _Workers, outcome: RunOutcome,
            t_start: float) -> PrelabelReport:
    """The run's report from what it did."""
    done, failed, kinds, stage_s = outcome.done, outcome.failed, outcome.kinds, outcome.stage_s
    cluster = workers.cluster
    return PrelabelReport(
        run_id=run_id,
        segpipe_version=__version__,
        store=str(outcome.store) if outcome.store.location is not None else str(req.out),
        source=req.source,
        model=ModelSummary(spec=req.model, arch=model.meta.arch, task=model.meta.task),
        # Items that failed before any task was planned for them (refused at ingest, scenes that cannot
        # be opened) count once each, so done + failed + not run + already done add up to the total.
        images=ImageCounts(total=outcome.planned - outcome.unplanned + sum(1 for f in failed if not f.key),
                           done=done, skipped_already_done=outcome.skipped, failed=len(failed),
                           not_run=outcome.todo - done - sum(1 for f in failed if f.key)),
        items=ItemCounts(images=kinds.images, scenes=kinds.scenes, volumes=kinds.volumes, tasks=outcome.planned),
        failed=[FailedItem(file=f.file, image_id=f.image_id, reason=f.reason) for f in failed],
        throughput_img_s=round(done / outcome.run_s, 3) if outcome.run_s > 0 and done else 0.0,
        stage_seconds=StageSeconds(decode=round(stage_s.decode, 3), infer=round(stage_s.infer, 3),
                                   write=round(stage_s.write, 3)),
        workers=cluster.scheduler or ("in-process" if cluster.workers == 0 else workers.n_workers),
        threads_per_worker=workers.threads,
        dashboard=outcome.dashboard,
        stopped_on_error=outcome.stopped,
        elapsed_s=round(time.perf_counter() - t_start, 3),
    )
