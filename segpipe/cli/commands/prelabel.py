"""``segpipe prelabel SOURCE --model CKPT|ARCH[:WEIGHTS] --out STORE.zarr`` and ``segpipe fsck STORE``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from segpipe.cli.common import (
    OnError,
    Stretch,
    Task,
    arch_option,
    build_request,
    device_option,
    on_error_option,
    overlap_option,
    overwrite_option,
    progress_bar,
    resume_option,
    scheduler_option,
    score_option,
    task_option,
    threads_option,
    workers_option,
)

if TYPE_CHECKING:
    from segpipe.pipeline.prelabel.report import ItemCounts


def register(app: typer.Typer) -> None:
    """Adds the commands."""

    @app.command("prelabel")
    def prelabel_cmd(
        source: str = typer.Argument(..., help="A folder or glob of images, a COCO/VOC/YOLO dataset, or a "
                                    "manifest: a local path or an s3://, gs://, az:// or https:// URL."),
        model: str = typer.Option(..., "--model", "-m", help="Checkpoint, state dict, TorchScript, .pt2, ONNX, "
                                  "Hugging Face or smp folder, or ARCH:WEIGHTS from TORCH_HOME: a local path, or "
                                  "an s3://, gs://, az:// URL (a file or a folder prefix) or an https:// file."),
        out: Path = typer.Option(..., "--out", "-o", help="The Zarr store to write (STORE.zarr)."),
        arch: str | None = arch_option(
            "Architecture of a plain state dict (.pt, .pth, .safetensors): a name from `segpipe models`, or "
            "package.module:function (a builder of yours, importable on every worker)."),
        num_classes: int | None = typer.Option(None, "--num-classes", min=1, help="Classes of a model whose "
                                               "weights or metadata do not say (default: inferred)."),
        classes: str | None = typer.Option(None, "--classes", help="Class names (and colours): labelmap.txt, "
                                           "names.yaml, or VOC, COCO, Cityscapes."),
        task: Task | None = task_option(None, help="The model's task, checked against the checkpoint."),
        tile: int | None = typer.Option(None, "--tile", min=16, help="Tile side in pixels (default: checkpoint's)."),
        overlap: float | None = overlap_option(),
        batch: int = typer.Option(4, "--batch", min=1, help="Tiles per forward pass."),
        device: str = device_option(),
        gpus: str | None = typer.Option(None, "--gpus", help="GPUs for the local cluster, e.g. 0,2: one worker "
                                        "each, pinned to it (default: every GPU this machine shows)."),
        precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on a CUDA device that "
                                      "supports it, else fp32), fp32, or bf16 (the CPU too)."),
        gpu_decode: str = typer.Option("auto", "--gpu-decode", help="Decode JPEGs on the GPU when the device is "
                                       "CUDA: auto, on (refuses --device cpu) or off."),
        resume: bool = resume_option("Continue a store made with the same model and config."),
        overwrite: bool = overwrite_option("Start a new run, replacing the store."),
        on_error: OnError = on_error_option(OnError.SKIP, help="Unreadable images: skip reports each, stores the "
                                            "rest and exits 1; fail stops at the first."),
        heatmaps: bool = typer.Option(True, "--heatmaps/--no-heatmaps", help="Store landmark heatmaps."),
        probs: bool = typer.Option(True, "--probs/--no-probs", help="Store per-class probabilities (uint8)."),
        min_score: float = score_option(0.05, help="Instances below this score are not stored (0..1)."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images."),
        workers: int | None = workers_option(),
        scheduler: str | None = scheduler_option(),
        threads: int | None = threads_option(),
        bands: str | None = typer.Option(None, "--bands", help="GeoTIFF bands as R,G,B (1-based), e.g. 4,3,2."),
        window: str | None = typer.Option(None, "--window", help="Intensity window CENTER,WIDTH, e.g. 40,400."),
        stretch: Stretch = typer.Option(
            Stretch.AUTO, "--stretch", help="GeoTIFF to 8-bit: auto is percentile unless the scene is 8-bit.",
        ),
        percentiles: str | None = typer.Option(None, "--percentiles", help="LOW,HIGH of the stretch, e.g. 2,98."),
        tta: str = typer.Option("none", "--tta", help="Test-time augmentation of a semantic model: none, flip (the "
                                "image and its h, v, hv flips, probabilities averaged) or flip+scale."),
        tta_scales: str | None = typer.Option(None, "--tta-scales", help="Scales of --tta flip+scale, each in "
                                              "[0.25, 4] (default 0.75,1,1.25)."),
        ensemble: str | None = typer.Option(None, "--ensemble", help="More semantic models of the same classes, "
                                            "B,C: their probabilities are averaged with --model's."),
        prompts: Path | None = typer.Option(None, "--prompts", help="Boxes to turn into instance masks with a SAM "
                                            "model (--model SAM_DIR: transformers SAM / SAM 2, or an ONNX "
                                            "encoder/decoder pair): a COCO results file, any dataset segpipe "
                                            "reads, or a segpipe instance store."),
    ) -> None:
        """Pre-label images with a model into a Zarr store, on Dask; resumable."""
        # lazy: pydantic and the workflow load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.cli import state
        from segpipe.pipeline.requests import PrelabelRequest

        req = build_request(PrelabelRequest, locals())
        state.OUTPUT = req.out
        with progress_bar("prelabel") as update:
            rep = api.prelabel(req, workers=workers, scheduler=scheduler, progress=update, log=state.progress_log())
        im = rep.images
        st = rep.stage_seconds
        of, rate = _units(rep.items)
        state.console.print(
            f"{rep.store}: {im.done} done, {im.skipped_already_done} already done, {im.failed} failed"
            f" of {im.total} {of}; {rep.throughput_img_s} {rate}; decode {st.decode} s, infer {st.infer} s,"
            f" write {st.write} s", markup=False)
        pr = rep.prompts
        if pr is not None and pr.unmatched_boxes:  # boxes for images not in SOURCE: said, never dropped silently
            state.err_console.print(f"warning: {pr.file}: {pr.unmatched_boxes} of {pr.boxes} boxes name "
                                    f"{pr.unmatched_images} images that are not in {rep.source}", markup=False)
        for f in rep.failed[:20]:  # per-item failures are diagnostics: stderr, like every error line
            state.err_console.print(f"error: {f.file}: {f.reason}", markup=False)
        if len(rep.failed) > 20:
            state.err_console.print(f"... {len(rep.failed) - 20} more failures in the run report", markup=False)
        if rep.earlier_store_kept:  # --overwrite run stopped by --on-error fail: nothing replaced
            state.console.print(f"{rep.store}: the run stopped on an error; the earlier store was kept",
                                markup=False)
        else:
            state.console.print(f"run report: {rep.store}/.segpipe/runs/{rep.run_id}.json", markup=False)
        if im.failed:  # partial failure is exit 1 under --on-error skip too (README: exit codes)
            raise typer.Exit(1)

    @app.command("fsck")
    def fsck_cmd(
        store: Path = typer.Argument(..., help="A segpipe Zarr store."),
        repair: bool = typer.Option(False, "--repair", help="Remove orphan *.partial files and bad receipts; rewrite "
                                    "wrong stack attrs from the manifest or the receipts (a slot no receipt vouches "
                                    "for is cleared for --resume; one that cannot be rebuilt is left, exit 1)."),
    ) -> None:
        """Check a store: receipts decode and match their outputs' checksums; no orphans (exit 1 if not)."""
        # lazy: pydantic and the workflow load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.cli import state
        from segpipe.pipeline.requests import FsckRequest

        rep = api.fsck(build_request(FsckRequest, locals()))
        # What is wrong goes to stderr, one line per file (what --repair removed is no longer wrong).
        out = state.console if repair else state.err_console
        for b in rep.bad:  # a bad receipt is removed; a damaged pack (no key) is rewritten with the rest
            verb = ("removed" if b.key else "rewrote") if repair else "error"
            out.print(f"{verb}: {b.file}: bad receipt: {b.problem}", markup=False)
        for p in rep.problems:
            state.err_console.print(f"error: {p.file}: {p.problem}", markup=False)
        for a in rep.attrs:  # a slot's attrs rewritten, or the slot cleared for --resume ("kept": not repairable)
            kept = a.repair == "kept"
            (state.err_console if kept else out).print(f"{'error' if kept else a.repair or 'error'}: {a.file}: "
                                                       f"{a.problem}", markup=False)
        for o in rep.orphans:
            out.print(f"{'removed' if repair else 'error'}: {o}: orphan of a killed writer", markup=False)
        state.console.print(
            f"{rep.store}: {rep.ok}/{rep.receipts} receipts ok, {len(rep.bad)} bad receipts, "
            f"{len(rep.orphans)} orphans, "
            f"{len(rep.problems)} problems" + (f", {len(rep.attrs)} slots with wrong attrs" if rep.attrs else "")
            + (f", {rep.repaired} repaired" if repair else ""), markup=False)
        if rep.problems or any(a.repair == "kept" for a in rep.attrs) or (
                (rep.bad or rep.orphans or rep.attrs) and not repair):
            raise typer.Exit(1)


def _units(items: ItemCounts) -> tuple[str, str]:
    """What the report's counts count: images, or tasks when scenes (blocks) or volumes (slices) are in.

    Returns:
        ``(noun for the total, unit of the rate)``, e.g. ``("images", "img/s")`` or
        ``("tasks (3 images, 1 scene)", "tasks/s")``.
    """
    if not (items.scenes or items.volumes):
        return "images", "img/s"
    counts = {"images": items.images, "scenes": items.scenes, "volumes": items.volumes}
    parts = [f"{n} {k if n != 1 else k[:-1]}" for k, n in counts.items() if n]
    return f"tasks ({', '.join(parts)})", "tasks/s"
