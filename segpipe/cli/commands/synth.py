"""``segpipe synth``: write a synthetic segmentation dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli.common import SynthFormat, overwrite_option, seed_option


def register(app: typer.Typer) -> None:
    """Adds the command."""

    @app.command("synth")
    def synth_cmd(
        kind: str = typer.Argument(..., help="streetview, satellite, medical or landmarks."),
        out: Path = typer.Argument(..., help="Output folder."),
        n: int = typer.Option(16, "--n", min=1, help="Number of images."),
        seed: int = seed_option("Random seed (same seed, same bytes)."),
        size: str | None = typer.Option(None, "--size", help="HxW, e.g. 256x512 (default: per kind)."),
        jpg: bool = typer.Option(False, "--jpg", help="Write photos as JPEG instead of PNG."),
        fmt: SynthFormat | None = typer.Option(
            None, "--format", help="Photos as png or jpg; scenes as geotiff (satellite); volumes as nifti or dicom "
            "(medical). Default: png, or jpg with --jpg."
        ),
        exif: bool = typer.Option(False, "--exif", help="JPEG photos stored rotated with an EXIF orientation."),
        depth: int = typer.Option(16, "--depth", help="Slices per volume (nifti, dicom)."),
        overwrite: bool = overwrite_option("Replace an earlier `segpipe synth` output."),
    ) -> None:
        """Write a synthetic dataset: images/, masks/, annotations.json (COCO), labelmap.txt."""
        from segpipe.cli import state
        from segpipe.cli.state import console
        from segpipe.synth import parse_size, synth

        state.OUTPUT = out
        image_format = fmt.value if fmt is not None else ("jpg" if jpg else "png")
        if image_format in ("png", "jpg") and not exif:
            res = synth(kind, out, n=n, seed=seed, size=parse_size(size) if size else None, image_format=image_format,
                        overwrite=overwrite)
        else:
            from segpipe.synth.native import synth_native

            res = synth_native(kind, out, n=n, seed=seed, size=parse_size(size) if size else None,
                               fmt=image_format, exif=exif, depth=depth, overwrite=overwrite)
        console.print(
            f"wrote {res.images} images ({res.size[0]}x{res.size[1]}) and {res.annotations} annotations to {res.out}",
            markup=False,
        )
