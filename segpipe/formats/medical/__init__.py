"""Medical writers: label volumes as NIfTI (``nifti``), assembled from the store's per-slice groups
(see :mod:`segpipe.formats.medical.nifti`). Writer-only: volumes are read with
:func:`segpipe.storage.volume.open_volume` by the pre-labeling.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.formats.base import FormatSpec
from segpipe.formats.medical.nifti import NiftiWriter, nifti_header
from segpipe.formats.registry import register_format

__all__ = ["NIFTI", "NiftiWriter", "nifti_header"]


def _never(path: Path) -> bool:
    """Writer-only formats are never detected as sources."""
    return False


NIFTI = register_format(
    FormatSpec(
        name="nifti",
        description="label volumes as .nii.gz with the source affine, from per-slice store groups "
        "(write-only; needs nibabel)",
        detect=_never,
        writer=NiftiWriter,
        holds=frozenset({"semantic"}),
    )
)
