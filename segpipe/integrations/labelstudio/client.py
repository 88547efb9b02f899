"""A small Label Studio REST client (stdlib ``urllib`` only).

Plain REST rather than ``label-studio-sdk``: the SDK brings httpx, its own pydantic models and a
dozen other packages into segpipe's pinned environment for the six endpoints used here
(projects, import, its status for editions that import in the background, export, token refresh).

Authentication: a *personal access token* (a JWT refresh token, three dot-separated parts) is
exchanged at ``POST /api/token/refresh/`` for a short-lived access token sent as
``Authorization: Bearer ...`` (refreshed again when the server answers 401); any other token is a
*legacy token*, sent as ``Authorization: Token ...``. The token never appears in an error message,
a log line or a repr.

Retries: connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff
(``retries`` times). A request that may have reached the server (a timeout, a 5xx) is retried only
when it is idempotent; :meth:`LabelStudioClient.request` leaves non-idempotent ones
(``idempotent=False``) to the caller, which checks the server's state first (see
:func:`segpipe.integrations.labelstudio.sync.push`).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from segpipe.errors import SegpipeError

#: HTTP statuses worth another try: the server is busy or failed transiently.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "segpipe-labelstudio"


class LabelStudioError(SegpipeError):
    """The Label Studio server refused a request, failed, or cannot be reached (one line, exit 2)."""


class TransientError(LabelStudioError):
    """A failure that may pass (connection error, timeout, 429, 5xx), after the retries were spent.

    Attributes:
        maybe_sent: The request may have reached the server (a timeout or a 5xx, not a refused
            connection): a non-idempotent request may have taken effect.
    """

    def __init__(self, message: str, *, maybe_sent: bool, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, path=path, hint=hint)
        self.maybe_sent = maybe_sent


def is_jwt(token: str) -> bool:
    """A personal access token is a JWT (``header.payload.signature``); a legacy token is one hex word."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def normalize_url(url: str) -> str:
    """``http[s]://host[:port][/prefix]`` without a trailing slash.

    Raises:
        LabelStudioError: not an http(s) URL, a port that is no number in 0..65535, credentials, a query or a
            fragment (API paths are appended to the URL, and a ``?token=`` would be sent and printed), blanks or
            control characters (named ``--url``; a URL that may hold a secret is not echoed).
    """
    u = url.strip().rstrip("/")
    try:
        parsed = urllib.parse.urlsplit(u)
        parsed.port  # noqa: B018 -- raises ValueError for a port that is no number or out of range
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535" ...
        raise LabelStudioError(f"--url is not a valid http:// or https:// address ({e})") from None
    if parsed.username or parsed.password:
        raise LabelStudioError("--url must not hold credentials; pass the token with --token or LABEL_STUDIO_API_KEY")
    if parsed.query or parsed.fragment or "?" in u or "#" in u:
        raise LabelStudioError("--url must be the server's address without a ?query or #fragment; pass the token "
                               "with --token or LABEL_STUDIO_API_KEY")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LabelStudioError(f"--url {url!r} is not an http:// or https:// address of a Label Studio server")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in u):
        raise LabelStudioError(f"--url {url!r} holds blanks or control characters")
    return u


class LabelStudioClient:
    """Calls a Label Studio server's REST API.

    Args:
        url: The server, e.g. ``http://127.0.0.1:8080``.
        token: A personal access token or a legacy token.
        timeout: Seconds per request.
        retries: Further tries of a transient failure.
        backoff: Seconds before the first retry (doubled each time, at most 30 s).
        sleep: Injected for tests.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 120.0, retries: int = 5, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not token:
            raise LabelStudioError("no Label Studio token: pass --token or set LABEL_STUDIO_API_KEY")
        self.url = normalize_url(url)
        self.__token = token
        self.__access: str | None = None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self.personal = is_jwt(token)

    def __repr__(self) -> str:  # never the token
        kind = "personal access token" if self.personal else "legacy token"
        return f"LabelStudioClient({self.url!r}, {kind})"

    # ------------------------------------------------------------------------------------------ auth

    def _auth(self, refresh: bool = False) -> str:
        if not self.personal:
            return f"Token {self.__token}"
        if self.__access is None or refresh:
            answer = self._send("POST", "/api/token/refresh/", {"refresh": self.__token}, auth=None, idempotent=True)
            access = answer.get("access") if isinstance(answer, dict) else None
            if not isinstance(access, str) or not access:
                raise LabelStudioError("the server did not return an access token for the personal access token",
                                       path=f"{self.url}/api/token/refresh/")
            self.__access = access
        return f"Bearer {self.__access}"

    # ----------------------------------------------------------------------------------- requests

    def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                idempotent: bool | None = None) -> Any:
        """Sends one request and returns the decoded JSON answer (``None`` for an empty body).

        Args:
            method: ``GET``, ``POST``, ``PATCH`` ...
            path: ``/api/...``.
            body: JSON-serialisable, or None.
            params: Query parameters.
            idempotent: Whether a request that may have reached the server can be sent again
                (default: GET, HEAD, PUT, DELETE, PATCH are; POST is not).

        Raises:
            LabelStudioError: a 4xx answer (the server's own message, cut to one line), or a
                :class:`TransientError` once the retries are spent.
        """
        if idempotent is None:
            idempotent = method.upper() != "POST"
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        try:
            return self._send(method, path, body, auth=self._auth(), idempotent=idempotent)
        except _Unauthorized:
            if not self.personal:
                raise self._refused(path) from None
            try:  # the access token expired: one fresh one, once
                return self._send(method, path, body, auth=self._auth(refresh=True), idempotent=idempotent)
            except _Unauthorized:
                raise self._refused(path) from None

    def _refused(self, path: str) -> LabelStudioError:
        kind = "personal access token" if self.personal else "legacy token"
        hint = ("legacy tokens must be enabled in the organization's Access Token Settings"
                if not self.personal else "create a new one under Account & Settings")
        return LabelStudioError(f"the server refused the {kind} from --token / LABEL_STUDIO_API_KEY (HTTP 401)",
                                path=f"{self.url}{path.split('?')[0]}", hint=hint)

    def _send(self, method: str, path: str, body: Any, *, auth: str | None, idempotent: bool) -> Any:
        url = f"{self.url}{path}"
        where = url.split("?")[0]
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth is not None:
            headers["Authorization"] = auth
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw) if raw.strip() else None
                except ValueError:
                    raise LabelStudioError("the answer is not JSON", path=where,
                                           hint="is --url the address of a Label Studio server?") from None
            except urllib.error.HTTPError as e:
                detail = _detail(e)
                if e.code == 401 and auth is not None:
                    raise _Unauthorized() from None
                if e.code in RETRY_STATUSES:
                    may_retry = idempotent or e.code == 429  # 429: refused before any work was done
                    if may_retry and not last:
                        self._sleep(_retry_after(e, delay))
                        delay = min(delay * 2, 30.0)
                        continue
                    raise TransientError(f"HTTP {e.code} {e.reason}{detail}", maybe_sent=e.code != 429,
                                         path=where) from None
                raise LabelStudioError(f"HTTP {e.code} {e.reason}{detail}", path=where) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                reason = getattr(e, "reason", e)
                refused = isinstance(reason, ConnectionRefusedError | socket.gaierror)
                # A refused connection is retried twice at most: a wrong --url should not take 15 s to say so.
                if (idempotent or refused) and not last and (not refused or attempt < 2):
                    self._sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                what = "cannot connect" if refused else "no answer"
                raise TransientError(f"{what} ({_one_line(str(reason))})", maybe_sent=not refused, path=where,
                                     hint="is the server running at --url?" if refused else None) from None
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------- endpoints

    def get(self, path: str, **params: Any) -> Any:
        """``GET path?params`` (retried)."""
        return self.request("GET", path, params=params or None)

    def paged(self, path: str, page_size: int = 100, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list (``{"results": [...], "next": ...}`` or a plain list)."""
        page = 1
        while True:
            answer = self.get(path, page=page, page_size=page_size, **params)
            if isinstance(answer, list):
                yield from answer
                return
            if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
                raise LabelStudioError("unexpected answer (not a list of results)", path=f"{self.url}{path}")
            yield from answer["results"]
            if not answer.get("next"):
                return
            page += 1


class _Unauthorized(Exception):
    """HTTP 401: the caller decides whether a fresh access token is worth a try."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _detail(e: urllib.error.HTTPError) -> str:
    """``": <the server's message>"`` from a JSON or text error body, one line (empty if none)."""
    try:
        raw = e.read()
    except Exception:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace")
        # An HTML error page says nothing useful on one line.
        return "" if "<html" in text.lower() or not text.strip() else f": {_one_line(text)}"
    if isinstance(doc, dict):
        for key in ("detail", "validation_errors", "message", "error"):
            if doc.get(key):
                return f": {_one_line(json.dumps(doc[key]) if not isinstance(doc[key], str) else doc[key])}"
    return f": {_one_line(json.dumps(doc))}"


def _retry_after(e: urllib.error.HTTPError, default: float) -> float:
    value = e.headers.get("Retry-After") if e.headers else None
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else default
    except ValueError:
        return default
