"""One way to name where data lives: a local path or an object-storage URL.

``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix`` (also ``abfs://``) and
``https://host/prefix`` (read-only) become a :class:`Location` backed by `obstore`_ (the Rust
``object_store`` crate: S3, GCS, Azure and HTTP behind one API, and what zarr's
``zarr.storage.ObjectStore`` wraps). Anything else is a local path.

Credentials and endpoints come from the standard environment variables of each service
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME`` …), read by obstore itself: a
location holds only its URL, so it pickles to workers without secrets, and nothing here prints or
writes a credential (:meth:`Location.__repr__` shows the URL without any ``user:password@``).

.. _obstore: https://developmentseed.org/obstore/
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from segpipe.errors import ConfigError, InputError

#: URL schemes served by object storage, and whether segpipe may write there.
SCHEMES: dict[str, bool] = {"s3": True, "gs": True, "az": True, "abfs": True, "https": False}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(target: str | os.PathLike[str]) -> bool:
    """True if ``target`` names object storage (``scheme://…``) rather than a local path."""
    return isinstance(target, str) and _URL.match(target) is not None and not target.startswith("file://")


def _redacted(url: str) -> str:
    # A URL may carry user:password@ (https basic auth): never shown in a message or a repr.
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Location:
    """A folder in object storage (``url``), with the few operations segpipe's files need.

    Keys are ``/``-separated and relative to the location. Frozen and holding only the URL, so it
    pickles to Dask workers; each process builds its own obstore client on first use.

    Args:
        url: ``scheme://bucket/prefix`` without a trailing ``/``.
    """

    url: str

    def __repr__(self) -> str:
        return f"Location({_redacted(self.url)!r})"

    def __str__(self) -> str:
        return _redacted(self.url)

    @property
    def writable(self) -> bool:
        """False for ``https://`` (read-only)."""
        return SCHEMES[urlsplit(self.url).scheme]

    def child(self, key: str) -> Location:
        """The location ``key`` below this one."""
        return Location(f"{self.url}/{key.strip('/')}")

    def key_url(self, key: str) -> str:
        """The full (redacted) URL of ``key``, for messages."""
        return f"{self}/{key}"

    @property
    def store(self) -> Any:
        """The obstore store rooted at this location (built once per process)."""
        return _obstore(self.url)

    # -------------------------------------------------------------- bytes

    def read_bytes(self, key: str) -> bytes:
        """The bytes of ``key``.

        Raises:
            FileNotFoundError: No such object.
        """
        import obstore  # lazy: the Rust extension loads only when object storage is used
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            raise FileNotFoundError(self.key_url(key)) from None

    def exists(self, key: str) -> bool:
        """True if the object ``key`` exists."""
        import obstore  # lazy: the Rust extension loads only when object storage is used
        from obstore.exceptions import NotFoundError

        try:
            obstore.head(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    def write_bytes(self, key: str, data: bytes) -> None:
        """Writes ``key`` whole (an object store's PUT is atomic: a reader sees the old or the new object)."""
        import obstore  # lazy: the Rust extension loads only when object storage is used

        self._check_writable(key)
        obstore.put(self.store, key, data)

    def write_later(self, key: str, data: bytes) -> Future[None]:
        """Starts writing ``key`` whole (:meth:`write_bytes`) and returns at once; the future holds any error."""
        self._check_writable(key)
        return _pool().submit(self.write_bytes, key, data)

    def delete_later(self, key: str) -> Future[None]:
        """Starts deleting ``key`` (:meth:`delete`) and returns at once; the future holds any error."""
        self._check_writable(key)
        return _pool().submit(self.delete, key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Writes ``key`` only if no object has that key (S3 ``If-None-Match: *``).

        Returns:
            True if this call created it, False if it already existed (left as it was).
        """
        import obstore  # lazy: the Rust extension loads only when object storage is used
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        self._check_writable(key)
        try:
            obstore.put(self.store, key, data, mode="create")
        except (AlreadyExistsError, PreconditionError, FileExistsError):
            return False
        return True

    def delete(self, key: str) -> None:
        """Deletes ``key`` (no error if absent)."""
        import obstore  # lazy: the Rust extension loads only when object storage is used
        from obstore.exceptions import NotFoundError

        self._check_writable(key)
        try:
            obstore.delete(self.store, key)
        except (NotFoundError, FileNotFoundError):
            pass

    def delete_many(self, keys: Sequence[str]) -> None:
        """Deletes ``keys`` (in batches: S3's multi-object delete, Azure's batch; no error for absent ones)."""
        import obstore  # lazy: the Rust extension loads only when object storage is used
        from obstore.exceptions import NotFoundError

        self._check_writable("")
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            try:
                obstore.delete(self.store, batch)
            except (NotFoundError, FileNotFoundError):
                # S3's batch skips an absent key, Azure's (and GCS's) fail on it: then one by one, as delete()
                for key in batch:
                    self.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key below ``prefix`` (recursively), relative to this location, sorted."""
        import obstore  # lazy: the Rust extension loads only when object storage is used

        keys: list[str] = []
        for batch in obstore.list(self.store, prefix.strip("/") or None):
            keys.extend(str(meta["path"]) for meta in batch)
        yield from sorted(keys)

    def top_level(self) -> tuple[str, ...]:
        """The names directly below this location (objects and "folders": one LIST, however many objects)."""
        import obstore  # lazy: the Rust extension loads only when object storage is used

        res = obstore.list_with_delimiter(self.store)
        names = [str(p).rstrip("/") for p in res["common_prefixes"]]
        names += [str(meta["path"]) for meta in res["objects"]]
        return tuple(sorted({n.rsplit("/", 1)[-1] for n in names}))

    def zarr_store(self, *, read_only: bool) -> Any:
        """A ``zarr.storage.ObjectStore`` over this location."""
        from zarr.storage import ObjectStore  # lazy: zarr costs ~0.5 s to import

        if not read_only:
            self._check_writable("")
        return ObjectStore(self.store, read_only=read_only)

    def _check_writable(self, key: str) -> None:
        if not self.writable:
            raise ConfigError("https:// locations are read-only; write to s3://, gs:// or az://",
                              path=self.key_url(key))


def names_object_storage(target: str | os.PathLike[str]) -> str | None:
    """The (redacted) URL if ``target`` names object storage, else None.

    Also recognises what :class:`pathlib.Path` makes of a URL (``s3://b/x`` → ``s3:/b/x``), so that a
    command whose option is typed as a path refuses it instead of writing a local folder ``s3:``.
    """
    text = os.fspath(target)
    if is_url(text):
        return _redacted(text)
    head, sep, rest = text.partition(":/")
    if sep and head in SCHEMES and not rest.startswith("/"):
        return _redacted(f"{head}://{rest}")
    return None


def as_location(target: str | os.PathLike[str]) -> Path | Location:
    """:func:`parse_location`, also of what :class:`pathlib.Path` makes of a URL (``s3:/b/x``).

    For options typed as paths (Typer and pydantic turn ``s3://b/x`` into ``Path("s3:/b/x")``): the
    URL is recovered rather than written as a local folder ``s3:``.

    Raises:
        InputError: An unknown scheme, or a URL without a bucket.
    """
    text = os.fspath(target)
    if not is_url(text):
        head, sep, rest = text.partition(":/")
        if sep and head in SCHEMES and not rest.startswith("/"):
            text = f"{head}://{rest}"
    return parse_location(text)


def parse_location(target: str | os.PathLike[str]) -> Path | Location:
    """A local :class:`~pathlib.Path`, or a :class:`Location` for ``s3://``, ``gs://``, ``az://``, ``https://``.

    Raises:
        InputError: An unknown scheme, or a URL without a bucket.
    """
    if not is_url(target):
        text = os.fspath(target)
        return Path(text[len("file://"):] if text.startswith("file://") else text)
    url = str(target).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise InputError(f"unknown storage scheme {parts.scheme + '://'!r} (known: {known}, or a local path)",
                         path=_redacted(url))
    if not parts.netloc:
        raise InputError("no bucket in the URL (write scheme://bucket/prefix)", path=_redacted(url))
    if parts.scheme != "https" and (parts.fragment or "=" in parts.query):
        # urlsplit drops them from the key: `--out s3://b/x.zarr#v2` would write (or --overwrite) x.zarr, and
        # `?versionId=…` would read the current object, not that version. (A `?` without `=` is a glob.)
        raise InputError("a ?query or #fragment is not part of an object's key (object versions are not "
                         "supported): name the object by its key alone; a key holding '#' cannot be named",
                         path=_redacted_text(url))
    return Location(url)


_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")
_CODES = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (check the credentials in the environment)",
    "InvalidAccessKeyId": "the access key is not known to the service (check the credentials in the environment)",
    "SignatureDoesNotMatch": "the secret key does not match (check the credentials in the environment)",
}


def describe_storage_error(exc: BaseException) -> str:
    """What went wrong with an object-storage call, in a few words (no request details, no credentials).

    obstore's messages quote the whole HTTP exchange (request ids, the service's XML); a user needs
    the service's error code, or the kind of failure.
    """
    text = str(exc)
    code = _CODE.search(text)
    if code:
        return _CODES.get(code.group(1), f"the service answered {code.group(1)}")
    transport = transport_reason(text)
    if transport:
        return transport
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFoundError":
        return "not found"
    if type(exc).__name__ in ("PermissionDeniedError", "UnauthenticatedError"):
        return "access denied (check the credentials in the environment)"
    first = text.splitlines()[0] if text else type(exc).__name__
    return _redacted_text(first[:200])


_CERTIFICATE = re.compile(r"InvalidCertificate\(\s*([A-Za-z]+)")
_CERTIFICATE_WHY = {
    "UnknownIssuer": "signed by a CA this machine does not trust; give that CA's certificate in SSL_CERT_FILE",
    "NotValidForName": "not issued for this host name",
    "Expired": "expired",
    "NotValidYet": "not valid yet",
}


def transport_reason(text: str) -> str | None:
    """What kept a request from reaching the service, from an obstore error's text (None if nothing did).

    obstore's first line says only "Generic HTTP error"; the cause (a refused certificate, a refused
    connection) is in the error chain it quotes below.
    """
    cert = _CERTIFICATE.search(text)
    if cert:
        why = _CERTIFICATE_WHY.get(cert.group(1), cert.group(1))
        return f"the server's certificate is refused: {why}"
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "connection refused (is the server running, is the address right?)"
    if "dns error" in text or "failed to lookup address" in text:
        return "the host name does not resolve"
    if "InvalidContentType" in text:
        # rustls read a first byte no TLS record starts with: the server answered in plain HTTP
        return "the server did not answer in TLS (an https:// URL to a plain http:// server?)"
    return None


def _redacted_text(text: str) -> str:
    # user:password@ inside any URL quoted by an error message
    return re.sub(r"(://)[^/@\s]+@", r"\1", text)


_STORES: dict[str, Any] = {}
_POOL: tuple[int, ThreadPoolExecutor] | None = None
#: Requests one process keeps in flight together (obstore releases the GIL while it waits).
IO_THREADS = 8


def _pool() -> ThreadPoolExecutor:
    # One pool per process (a forked worker gets its own: the parent's threads do not exist there).
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(IO_THREADS, thread_name_prefix="segpipe-io"))
    return _POOL[1]


def wait_all(futures: Sequence[Future[Any]]) -> None:
    """Waits for every future of ``futures``, then raises the first error among them, if any."""
    first: BaseException | None = None
    for f in futures:
        err = f.exception()
        if err is not None and first is None:
            first = err
    if first is not None:
        raise first


def _obstore(url: str) -> Any:
    # One client per URL and process: building one reads the environment and sets up a connection pool.
    store = _STORES.get(url)
    if store is None:
        from obstore.store import from_url  # lazy: the Rust extension loads only when object storage is used

        kwargs: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if url.startswith("s3://") and endpoint and endpoint.startswith("http://"):
            # A local S3-compatible server (MinIO, moto): obstore refuses plain HTTP unless told.
            kwargs["client_options"] = {"allow_http": True}
        store = _STORES[url] = from_url(url, **kwargs)
    return store
