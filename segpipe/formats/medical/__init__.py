"""Medical label volumes as NIfTI (``nifti``): written from the store's per-slice groups (see
:mod:`segpipe.formats.medical.nifti`) and read back one sample per slice, paired with the
pre-labeling's slices (see :mod:`segpipe.formats.medical.reader`). Image volumes are read with
:func:`segpipe.storage.volume.open_volume` by the pre-labeling.
"""

from __future__ import annotations

from segpipe.formats.base import FormatSpec
from segpipe.formats.medical.nifti import NiftiWriter, nifti_header
from segpipe.formats.medical.reader import (
    NiftiReader,
    detect_nifti,
    materialize_nifti,
    slice_file_name,
    validate_nifti,
    volume_id,
)
from segpipe.formats.registry import register_format

__all__ = ["NIFTI", "NiftiReader", "NiftiWriter", "detect_nifti", "materialize_nifti", "nifti_header",
           "slice_file_name", "validate_nifti", "volume_id"]

NIFTI = register_format(
    FormatSpec(
        name="nifti",
        description="label volumes as .nii.gz with the source affine: labels/*.nii.gz, read one sample "
        "per slice, written from per-slice store groups (needs nibabel)",
        detect=detect_nifti,
        reader=NiftiReader,
        materialize=materialize_nifti,
        writer=NiftiWriter,
        validate=validate_nifti,
        holds=frozenset({"semantic"}),
    )
)
