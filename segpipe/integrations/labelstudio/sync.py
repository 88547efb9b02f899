"""``push``: a store's pre-labels into a Label Studio project; ``pull``: its annotations back.

Push builds the same tasks as ``segpipe export --to labelstudio`` (brush RLE predictions, one task per
image, :class:`~segpipe.formats.labelstudio.writer.LabelStudioWriter`), creates or reuses the project
with the matching label config, and imports the tasks in batches. What was pushed is recorded in the
store's private folder, ``STORE/.segpipe/labelstudio/pushed.jsonl``: one JSON line per imported batch
(server, project id, image ids, task ids), appended and fsynced once the server accepted the batch, so
a rerun (or a run after a crash) sends only the images not yet recorded for that server and project.
A batch whose answer was lost (a timeout, a 5xx) is not sent again blindly: the project's task count
tells whether the server committed it (Label Studio imports a batch in one transaction).

Pull writes ``OUT/export.json`` (the project's JSON export, as Label Studio gives it: annotated tasks
with their annotations and predictions), ``OUT/label_config.xml`` and ``OUT/segpipe_pull.json``
(server, project, counts). OUT is a dataset segpipe reads (format ``labelstudio``, without images: sizes
come from the results): ``validate``, ``convert`` (``--image-root`` for the photos), ``evaluate OUT STORE``
(images pair by the tasks' ``data.image_id``, classes by the ``category`` ids of the label config).
:func:`task_label_map` turns a task's brush annotation back into a label map.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml import ElementTree

from segpipe.errors import SegpipeError
from segpipe.formats.base import WriteOptions
from segpipe.formats.labelstudio.brush import rle_to_mask
from segpipe.formats.labelstudio.writer import LabelStudioWriter, label_config_xml
from segpipe.formats.zarrstore import StoreReader, materialize
from segpipe.integrations.labelstudio.client import LabelStudioClient, LabelStudioError, TransientError
from segpipe.storage.atomic import write_bytes_atomic
from segpipe.storage.outputs import check_output, staged
from segpipe.storage.zarrstore import PRIVATE, ZarrStore

#: Where push records what it sent (inside the store's private folder).
LEDGER = Path("labelstudio") / "pushed.jsonl"
EXPORT_NAME = "export.json"
CONFIG_NAME = "label_config.xml"
PULL_META = "segpipe_pull.json"
DEFAULT_BATCH = 100

Progress = Callable[[int, int, int], None]


# ------------------------------------------------------------------------------------------ projects


def find_project(client: LabelStudioClient, project: str) -> dict[str, Any] | None:
    """The project named by ``--project``: an id (digits) or an exact title; None if no title matches.

    Raises:
        LabelStudioError: an id the server does not know, or a title several projects share.
    """
    if re.fullmatch(r"\d+", project.strip()):
        try:
            return dict(client.get(f"/api/projects/{int(project)}"))
        except LabelStudioError as e:
            if "HTTP 404" in e.message:
                raise LabelStudioError(f"--project {project}: no project with this id on {client.url}") from None
            raise
    matches = [p for p in client.paged("/api/projects/", title=project) if p.get("title") == project]
    if len(matches) > 1:
        ids = ", ".join(str(p.get("id")) for p in matches)
        raise LabelStudioError(f"--project {project!r}: {len(matches)} projects have this title (ids {ids})",
                               hint="pass the id instead")
    return dict(matches[0]) if matches else None


def _labels(config: str) -> dict[str, set[str]]:
    """``{control tag name: its label values}`` of a label config."""
    try:
        root = ElementTree.fromstring(config)
    except Exception:
        return {}
    out: dict[str, set[str]] = {}
    for el in root.iter():
        name = el.get("name")
        if name and el.tag.endswith("Labels"):
            out[name] = {str(lab.get("value")) for lab in el if lab.get("value") is not None}
    return out


def ensure_project(client: LabelStudioClient, project: str, config: str) -> tuple[dict[str, Any], bool]:
    """Finds or creates the project and checks that its label config holds segpipe's tags and labels.

    A project without tasks gets ``config``; one with tasks must already name every control tag and
    label of ``config`` (segpipe never replaces a config annotators work with).

    Returns:
        The project (as the server describes it) and whether it was created.

    Raises:
        LabelStudioError: the project's config lacks a tag or label segpipe's predictions use.
    """
    found = find_project(client, project)
    if found is None:
        created = client.request("POST", "/api/projects/", {"title": project, "label_config": config},
                                 idempotent=False)
        return dict(created), True
    pid = found["id"]
    current = str(found.get("label_config") or "")
    if " ".join(current.split()) == " ".join(config.split()):
        return found, False
    ours, theirs = _labels(config), _labels(current)
    missing = [f"{tag}/{lab}" for tag, labs in ours.items() for lab in sorted(labs - theirs.get(tag, set()))]
    missing += [tag for tag in ours if tag not in theirs]
    if not missing:
        return found, False
    if int(found.get("task_number") or 0) == 0:
        updated = client.request("PATCH", f"/api/projects/{pid}", {"label_config": config})
        return dict(updated), False
    shown = ", ".join(sorted(set(missing))[:5]) + (" ..." if len(set(missing)) > 5 else "")
    raise LabelStudioError(
        f"--project {project}: the project's label config lacks {shown}, which the pre-labels use",
        hint="push to a new project, or add them to its labeling config")


# --------------------------------------------------------------------------------------------- ledger


def _ledger_path(store: Path) -> Path:
    return store / PRIVATE / LEDGER


def pushed_images(store: Path, server: str, project_id: int) -> set[int]:
    """Image ids the ledger records as pushed to this server's project (a torn last line is ignored)."""
    path = _ledger_path(store)
    done: set[int] = set()
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: that batch is checked against the server again
            if isinstance(rec, dict) and rec.get("server") == server and rec.get("project") == project_id:
                done.update(int(i) for i in rec.get("images", []))
    return done


def _record(store: Path, rec: dict[str, Any]) -> None:
    path = _ledger_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------------------- push


@dataclass
class PushReport:
    """What a push did.

    Attributes:
        project_id: The project.
        title: Its title.
        created: Whether push created it.
        sent: Tasks imported by this run.
        skipped: Images the ledger records as already pushed.
        failed: ``(image id, why)`` of images whose pre-labels could not be read.
        task_number: Tasks in the project after the push.
    """

    project_id: int
    title: str
    created: bool
    sent: int = 0
    skipped: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    task_number: int = 0


def _tasks(store: Path, skip: set[int], *, image_url_prefix: str | None, model_version: str | None,
           failed: list[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(image id, task)`` for every image of the store not in ``skip`` (failures go to ``failed``)."""
    reader = StoreReader(store)
    extra: dict[str, Any] = {}
    if image_url_prefix is not None:
        extra["image_url_prefix"] = image_url_prefix
    if model_version is not None:
        extra["model_version"] = model_version
    writer = LabelStudioWriter(store, reader.meta, WriteOptions(copy_images="none", extra=extra))
    for sample in reader.samples():
        image_id = sample.image.id
        if image_id in skip:
            continue
        try:
            m = materialize(sample, reader.meta)
            shard = writer.write_shard(image_id, [m])
        except SegpipeError as e:
            failed.append((image_id, str(e)))
            continue
        task = shard.fragments[0][0]
        yield image_id, task


def label_config_for(store: Path) -> str:
    """The label config of a store's pre-labels (as ``export --to labelstudio`` writes it)."""
    return label_config_xml(StoreReader(store).meta.categories)


def _task_number(client: LabelStudioClient, pid: int) -> int:
    return int(client.get(f"/api/projects/{pid}").get("task_number") or 0)


def _import(client: LabelStudioClient, pid: int, tasks: list[dict[str, Any]]) -> list[int] | None:
    """Imports one batch; returns the new task ids (None where the server did not say).

    A lost answer (timeout, 5xx) is settled by the project's task count: grown by the batch → it
    was committed; unchanged → it is sent again; anything else → an error (someone else imports too).
    """
    tries = client.retries + 1
    for attempt in range(tries):
        before = _task_number(client, pid)
        try:
            answer = client.request("POST", f"/api/projects/{pid}/import", tasks,
                                    params={"return_task_ids": "true"}, idempotent=False)
        except TransientError as e:
            if not e.maybe_sent:
                raise
            after = _task_number(client, pid)
            if after == before + len(tasks):
                return None
            if after != before or attempt == tries - 1:
                raise LabelStudioError(
                    f"a batch of {len(tasks)} tasks may be half imported (the project went from {before} to "
                    f"{after} tasks after: {e})", path=f"{client.url}/api/projects/{pid}",
                    hint="check the project's tasks, then rerun push") from None
            time.sleep(min(2.0**attempt, 30.0))
            continue
        if isinstance(answer, dict) and "import" in answer and "task_count" not in answer:
            return _wait_import(client, pid, int(answer["import"]))
        ids = answer.get("task_ids") if isinstance(answer, dict) else None
        return [int(i) for i in ids] if isinstance(ids, list) else None
    raise AssertionError("unreachable")


def _wait_import(client: LabelStudioClient, pid: int, import_id: int, timeout: float = 600.0) -> list[int] | None:
    """Editions other than Community import in the background: polls until it is done."""
    t0 = time.monotonic()
    delay = 0.5
    while time.monotonic() - t0 < timeout:
        st = client.get(f"/api/projects/{pid}/imports/{import_id}")
        status = str(st.get("status", "")).lower()
        if status == "completed":
            ids = st.get("task_ids")
            return [int(i) for i in ids] if isinstance(ids, list) else None
        if status == "failed":
            raise LabelStudioError(f"the import failed: {st.get('traceback') or st.get('error') or 'no reason given'}",
                                   path=f"{client.url}/api/projects/{pid}/imports/{import_id}")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise LabelStudioError(f"the import did not finish in {timeout:.0f} s",
                           path=f"{client.url}/api/projects/{pid}/imports/{import_id}")


def push(store: str | Path, client: LabelStudioClient, project: str, *, batch_size: int = DEFAULT_BATCH,
         image_url_prefix: str | None = None, model_version: str | None = None, resend: bool = False,
         progress: Progress | None = None, log: Callable[[str], None] | None = None) -> PushReport:
    """Imports a store's pre-labels into a Label Studio project (see the module docstring).

    Args:
        store: A segpipe store made by ``segpipe prelabel``.
        client: The server.
        project: A project id, or a title (the project is created when no project has it).
        batch_size: Tasks per import request.
        image_url_prefix: Prefix of the tasks' image URLs (default: Label Studio's local-file serving).
        model_version: The predictions' ``model_version`` (default: the store's model).
        resend: Ignore the ledger and send every image again.
        progress: ``update(done, total, failed)``.
        log: Receives one-line notes (a project that holds fewer tasks than the ledger records).

    Returns:
        A :class:`PushReport`.
    """
    store = Path(store)
    if batch_size < 1:
        raise SegpipeError(f"--batch must be at least 1, got {batch_size}")
    store_obj = ZarrStore.open(store)  # not a store: one line naming it, before anything is sent
    store = store_obj.path
    config = label_config_for(store)
    proj, created = ensure_project(client, project, config)
    pid = int(proj["id"])
    report = PushReport(project_id=pid, title=str(proj.get("title", "")), created=created)
    done = set() if resend else pushed_images(store, client.url, pid)
    report.skipped = len(done)
    if done and int(proj.get("task_number") or 0) < len(done) and log is not None:
        log(f"note: project {pid} holds {proj.get('task_number')} tasks but {len(done)} images were pushed to it "
            "(tasks deleted there are not sent again; --resend sends everything)")

    total = max(len(StoreReader(store)) - len(done), 0)
    if progress is not None:
        progress(0, total, 0)
    batch: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        ids = _import(client, pid, [t for _, t in batch])
        _record(store, {"server": client.url, "project": pid, "images": [i for i, _ in batch], "tasks": ids,
                        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        report.sent += len(batch)
        batch.clear()
        if progress is not None:
            progress(report.sent, total, len(report.failed))

    for image_id, task in _tasks(store, done, image_url_prefix=image_url_prefix, model_version=model_version,
                                 failed=report.failed):
        batch.append((image_id, task))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    report.task_number = _task_number(client, pid)
    return report


# ----------------------------------------------------------------------------------------------- pull


@dataclass
class PullReport:
    """What a pull wrote: the project, tasks exported, tasks with annotations, annotations."""

    project_id: int
    title: str
    tasks: int
    annotated: int
    annotations: int


def export_project(client: LabelStudioClient, project: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The project and its JSON export (annotated tasks, with annotations and predictions).

    Raises:
        LabelStudioError: no project has this id or title.
    """
    proj = find_project(client, project)
    if proj is None:
        raise LabelStudioError(f"--project {project!r}: no project with this title on {client.url}")
    pid = int(proj["id"])
    tasks = client.get(f"/api/projects/{pid}/export", exportType="JSON", download_all_tasks="false")
    if not isinstance(tasks, list):
        raise LabelStudioError("the export is not a list of tasks", path=f"{client.url}/api/projects/{pid}/export")
    return proj, tasks


def pull(client: LabelStudioClient, project: str, out: str | Path, *, overwrite: bool = False) -> PullReport:
    """Writes a project's annotations to ``out`` (see the module docstring).

    The export is fetched before anything is written; ``out`` follows segpipe's output rules
    (:func:`segpipe.storage.outputs.check_output`): an earlier ``pull`` output is replaced only with
    ``overwrite``, atomically.
    """
    plan = check_output(out, [], option="OUT", command="pull", replace=overwrite, flag="--overwrite")
    proj, tasks = export_project(client, project)
    annotated = [t for t in tasks if t.get("annotations")]
    report = PullReport(project_id=int(proj["id"]), title=str(proj.get("title", "")), tasks=len(tasks),
                        annotated=len(annotated), annotations=sum(len(t["annotations"]) for t in annotated))
    with staged(plan) as d:
        write_bytes_atomic(d / EXPORT_NAME, json.dumps(tasks, ensure_ascii=False, indent=1).encode())
        write_bytes_atomic(d / CONFIG_NAME, str(proj.get("label_config") or "").encode())
        meta = {"server": client.url, "project": report.project_id, "title": report.title, "tasks": report.tasks,
                "annotated_tasks": report.annotated, "annotations": report.annotations,
                "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_bytes_atomic(d / PULL_META, json.dumps(meta, indent=1).encode())
    return report


def latest_annotation(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task's most recently updated annotation that was not cancelled (None if there is none)."""
    anns: list[dict[str, Any]] = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not anns:
        return None
    return max(anns, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))


def task_label_map(task: Mapping[str, Any], class_ids: Mapping[str, int], *, background: int = 0,
                   results: Iterable[Mapping[str, Any]] | None = None) -> np.ndarray | None:
    """A label map from the brush regions of a task's latest annotation.

    Regions are painted in result order (a later region wins where two overlap).

    Args:
        task: A task of the JSON export.
        class_ids: ``{label name: class id}``.
        background: The value of unpainted pixels.
        results: Regions to use instead of the latest annotation's.

    Returns:
        ``(H, W) int32``, or None when the task has no annotation or no brush region.

    Raises:
        SegpipeError: a region names a label not in ``class_ids``, or regions disagree on the size.
    """
    if results is None:
        ann = latest_annotation(task)
        if ann is None:
            return None
        results = ann.get("result", [])
    out: np.ndarray | None = None
    for r in results:
        value = dict(r.get("value") or {})
        if r.get("type") != "brushlabels" or value.get("format") != "rle":
            continue
        h, w = int(r["original_height"]), int(r["original_width"])
        if out is None:
            out = np.full((h, w), background, dtype=np.int32)
        elif out.shape != (h, w):
            raise SegpipeError(f"regions of one annotation disagree on the image size ({out.shape} vs {(h, w)})",
                               where=f"task {task.get('id')}")
        for label in value.get("brushlabels", []):
            if label not in class_ids:
                raise SegpipeError(f"label {label!r} is not one of the classes", where=f"task {task.get('id')}")
            out[rle_to_mask(value["rle"], h, w)] = class_ids[label]
    return out
