"""``segpipe synth KIND OUT``: request :class:`~segpipe.pipeline.requests.SynthRequest`."""

from __future__ import annotations

from pathlib import Path

import typer

from segpipe.cli import state
from segpipe.cli.common import SynthFormat, build_request, overwrite_option, seed_option


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
        format: SynthFormat | None = typer.Option(
            None, "--format", help="Photos as png or jpg; scenes as geotiff (satellite); volumes as nifti or dicom "
            "(medical). Default: png, or jpg with --jpg."
        ),
        exif: bool = typer.Option(False, "--exif", help="JPEG photos stored rotated with an EXIF orientation."),
        depth: int = typer.Option(16, "--depth", min=1, help="Slices per volume (nifti, dicom)."),
        overwrite: bool = overwrite_option("Replace an earlier `segpipe synth` output."),
    ) -> None:
        """Write a synthetic dataset: images/, masks/, annotations.json (COCO), labelmap.txt."""
        # lazy: pydantic and the synthetic kinds load when the command runs, not for `segpipe --help`
        from segpipe import api
        from segpipe.pipeline.requests import SynthRequest

        # --jpg is the command line's shorthand for --format jpg (the request has the one field)
        req = build_request(SynthRequest, {**locals(), "format": format or ("jpg" if jpg else None)})
        state.OUTPUT = req.out
        res = api.synthesize(req)
        state.console.print(
            f"wrote {res.images} images ({res.size[0]}x{res.size[1]}) and {res.annotations} annotations to {res.out}",
            markup=False,
        )
