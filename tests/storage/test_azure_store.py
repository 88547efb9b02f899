"""Azure Blob Storage (``az://``, ``abfs://``) end to end against Azurite, Microsoft's emulator (issue 16, point 2).

Azurite runs from ``.venv-azurite`` (``make peers-azurite``) on 127.0.0.1 with a fresh folder
(tests/_servers.py); segpipe reaches it through obstore's standard variables
(``AZURE_STORAGE_USE_EMULATOR``, ``AZURITE_BLOB_STORAGE_URL``), and GDAL through the connection string
segpipe derives from them. The cases of tests/storage/_url_backends.py run here, read side and write
side: a store written by ``segpipe prelabel`` (in the CLI's process, and by two real ``dask worker``
processes that read the images from the container too), ``segpipe fsck`` of it, ``--resume``, its COCO
export read back, sources listed and read from the container, a COG read by window through ``/vsiaz/``.
(The read side's own two-worker run is left out: the write side's covers it.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segpipe.storage.raster import AZURITE_ACCOUNT, AZURITE_KEY, gdal_cloud_options
from tests._servers import azurite, container
from tests.storage._url_backends import (
    PutTree,
    local_run,
    location,
    small,
    test_coco_dataset_and_glob_in_the_bucket_list_as_local_ones,
    test_cog_in_the_bucket_read_by_window,
    test_location_reads_lists_and_deletes,
    test_location_writes_and_put_if_absent,
    test_prelabel_into_the_bucket_equals_local_then_fsck_and_export,
    test_source_and_store_in_the_bucket_on_two_dask_workers,
    upload_tree,
)

__all__ = [  # the fixtures and the shared cases, for pytest
    "azurite",
    "container",
    "local_run",
    "small",
    "test_coco_dataset_and_glob_in_the_bucket_list_as_local_ones",
    "test_cog_in_the_bucket_read_by_window",
    "test_location_reads_lists_and_deletes",
    "test_location_writes_and_put_if_absent",
    "test_prelabel_into_the_bucket_equals_local_then_fsck_and_export",
    "test_source_and_store_in_the_bucket_on_two_dask_workers",
]


@pytest.fixture()
def bucket_url(container: str) -> str:  # noqa: F811 - the fixture imported above
    """A new, empty Azurite container as an ``az://`` URL."""
    return f"az://{container}"


@pytest.fixture()
def put_tree() -> PutTree:
    """Uploads through segpipe's own :class:`~segpipe.storage.location.Location` (Azurite takes obstore's PUTs)."""
    return upload_tree


def test_abfs_names_the_same_container(container: str, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes(b"via az")
    upload_tree(f"az://{container}/p", tmp_path / "t")
    assert location(f"abfs://{container}/p").read_bytes("a.txt") == b"via az"
    assert list(location(f"abfs://{container}").list()) == ["p/a.txt"]


def test_gdal_reaches_the_emulator_by_obstores_variables() -> None:
    """obstore's emulator switch becomes GDAL's connection string, with the emulator's public account."""
    env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": "http://127.0.0.1:10123"}
    assert gdal_cloud_options(env) == {"AZURE_STORAGE_CONNECTION_STRING": (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:10123/{AZURITE_ACCOUNT}")}
    assert "127.0.0.1:10000" in gdal_cloud_options({"AZURE_STORAGE_USE_EMULATOR": "1"})[
        "AZURE_STORAGE_CONNECTION_STRING"]  # obstore's default address
    assert gdal_cloud_options({"AZURE_STORAGE_USE_EMULATOR": "false"}) == {}
    # GDAL's own setting wins
    assert gdal_cloud_options({**env, "AZURE_STORAGE_CONNECTION_STRING": "mine"}) == {}
