"""The typed report of a pre-label run: ``STORE/.segpipe/runs/<run id>.json``, and what the CLI prints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSummary(_Record):
    """The model a run used."""

    spec: str = Field(description="checkpoint path or ARCH:WEIGHTS, as given")
    arch: str
    task: str


class ImageCounts(_Record):
    """What became of the run's items: ``done + failed + not_run + skipped_already_done = total``.

    Scene blocks and volume slices (or slabs) count one each; an item refused before any task was
    planned for it (at ingest, a scene that cannot be opened) counts once.
    """

    total: int
    done: int
    skipped_already_done: int = Field(description="finished by an earlier run (--resume)")
    failed: int
    not_run: int = Field(description="planned but not run: the run stopped on an error (--on-error fail)")


class ItemCounts(_Record):
    """The items of the source by kind, and the tasks planned for them."""

    images: int
    scenes: int
    volumes: int
    tasks: int


class FailedItem(_Record):
    """One item that failed, with its one-line reason."""

    file: str
    image_id: int
    reason: str


class StageSeconds(_Record):
    """Seconds the finished tasks spent per stage, summed over tasks (they overlap on workers)."""

    decode: float
    infer: float
    write: float


class PromptCounts(_Record):
    """The boxes of a prompted run (``--prompts``): none is dropped without being counted here."""

    file: str = Field(description="the --prompts file or folder")
    boxes: int = Field(description="boxes read")
    matched: int = Field(description="boxes whose image is in the source (each became a mask)")
    unmatched_boxes: int = Field(description="boxes naming an image that is not in the source")
    unmatched_images: int = Field(description="distinct images those boxes name")
    ignored: int = Field(description="annotations that are no box prompt (crowd regions, no box nor shape)")


class PrelabelReport(_Record):
    """A pre-label run's report, as written to ``STORE/.segpipe/runs/<run id>.json``."""

    run_id: str
    segpipe_version: str
    store: str
    source: str
    model: ModelSummary
    images: ImageCounts
    items: ItemCounts
    failed: list[FailedItem]
    throughput_img_s: float = Field(description="tasks finished per second of the run's task phase")
    stage_seconds: StageSeconds
    workers: str | int = Field(description="a scheduler's address, 'in-process', or the embedded workers")
    threads_per_worker: int
    dashboard: str | None
    stopped_on_error: bool
    elapsed_s: float
    prompts: PromptCounts | None = Field(default=None, description="a prompted run's boxes (--prompts)")
    earlier_store_kept: bool = Field(
        default=False, exclude=True,
        description="an --overwrite run stopped on an error: the earlier store was kept (not in the file)",
    )

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object: the run file's content, plus ``earlier_store_kept`` when true."""
        out = self.model_dump(mode="json")
        if self.earlier_store_kept:
            out["earlier_store_kept"] = True
        return out


class BadReceipt(_Record):
    """A receipt that does not hold: unreadable, or an output that differs from it."""

    key: str
    file: str = Field(description="the receipt file")
    problem: str = Field(description="what is wrong, naming the output file concerned")


class StoreProblem(_Record):
    """Something wrong in the store that no receipt answers for (a slot id found twice, an unvouched slot)."""

    file: str
    problem: str


class AttrsFinding(_Record):
    """A stack slot whose ``attrs`` (the image's attributes exports name its mask by) are wrong or lost."""

    file: str = Field(description="the stack's attrs chunk file")
    problem: str = Field(description="what is wrong, naming the stack, the slot and the field")
    repair: str = Field(default="", description="what --repair did: 'rewrote' (rebuilt exactly from the manifest or "
                                        "the receipt), 'cleared' (a slot no receipt vouches for is freed; --resume "
                                        "redoes the image) or 'kept' (not repairable: left as it is, exit 1)")


class FsckReport(_Record):
    """What ``segpipe fsck`` found in a store (and repaired, with ``--repair``)."""

    store: str
    receipts: int = Field(description="receipt files in the ledger")
    ok: int = Field(description="receipts whose outputs match their checksums and places")
    bad: list[BadReceipt]
    problems: list[StoreProblem]
    orphans: list[str] = Field(description="*.partial files of killed writers, and killed runs' staging folders")
    attrs: list[AttrsFinding] = Field(default_factory=list, description="stack slots whose attrs contradict "
                                      "their receipt or the stack's ids, or cannot be read")
    repaired: int = Field(description="files and folders removed (or rewritten) by --repair, and stack slots "
                                      "whose attrs it rewrote or cleared")
