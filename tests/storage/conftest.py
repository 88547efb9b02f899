"""Fixtures of the storage tests: a real S3 server (moto) where `.venv-moto` exists."""

from tests._s3 import bucket, s3_server

__all__ = ["bucket", "s3_server"]
