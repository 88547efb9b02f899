"""Single objects named by URL (``s3://bucket/key``, ``gs://``, ``az://``, ``https://``): their bytes, and
how messages name them.

An object is reached through the :class:`~segpipe.storage.location.Location` of its bucket (one obstore
client per bucket and process: a source of many folders builds no client per folder). Credentials come
from the environment (read by obstore, and by GDAL for rasters): a URL that carries ``user:password@``
is refused, because an item's URL travels to workers and is written into the manifest and the store.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from segpipe.errors import InputError
from segpipe.storage.location import Location, is_url, names_object_storage, parse_location, transport_reason

__all__ = ["error_reason", "is_url", "read_url", "redact", "split_url"]


def redact(url: str) -> str:
    """``url`` as messages show it: without ``user:password@``."""
    return names_object_storage(url) or url


def split_url(url: str) -> tuple[Location, str]:
    """The bucket's location and the key of ``url`` (``s3://b/a/x.jpg`` → ``(Location("s3://b"), "a/x.jpg")``).

    Raises:
        InputError: an unknown scheme, no bucket, or credentials written into the URL.
    """
    loc = parse_location(url)
    if not isinstance(loc, Location):
        raise InputError("expected an object-storage URL (scheme://bucket/key)", path=url)
    parts = urlsplit(loc.url)
    if parts.username or parts.password:
        raise InputError("the URL carries credentials (user:password@); give them through the environment",
                         path=redact(url))
    return Location(f"{parts.scheme}://{parts.netloc}"), parts.path.strip("/")


def error_reason(e: BaseException) -> str:
    """A one-line reason from an obstore error: the service's error code where it gives one."""
    text = str(e)
    if "<Code>" in text:
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0]
        return {"NoSuchBucket": "no such bucket", "NoSuchKey": "no such object",
                "AccessDenied": "access denied (check the credentials in the environment)"}.get(code, code)
    if isinstance(e, FileNotFoundError):
        return "no such object"
    transport = transport_reason(text)
    if transport:
        return transport
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first.split(": Error performing")[0][:200]


def read_url(url: str) -> bytes:
    """The bytes of the object ``url``, read whole.

    Raises:
        InputError: no such bucket or object, or it cannot be read (one line naming the URL).
    """
    import obstore  # lazy: the Rust extension loads only when object storage is used

    loc, key = split_url(url)
    try:
        return bytes(obstore.get(loc.store, key).bytes())
    except FileNotFoundError as e:
        raise InputError(f"not found: {error_reason(e)}", path=redact(url)) from None
    except Exception as e:  # obstore's errors (network, permission, a bad endpoint) are this object's problem
        raise InputError(f"cannot read: {error_reason(e)}", path=redact(url)) from None
