"""The Label Studio client's retries, lost answers and token handling, against a stub HTTP server
(no Label Studio needed: these run everywhere)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from segpipe.integrations.labelstudio.client import LabelStudioClient, LabelStudioError
from segpipe.integrations.labelstudio.sync import _import

PAT = "aaa.bbb.ccc"


class Stub:
    """A scripted server: ``script[(method, path)]`` is a list of ``(status, body, side effect)``."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.seen: list[tuple[str, str, str]] = []  # method, path, Authorization
        self.tasks = 0
        self.commit_on_error = False


@pytest.fixture()
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, method: str) -> None:
            path = self.path.split("?")[0]
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            state.seen.append((method, path, self.headers.get("Authorization", "")))
            queue = state.script.get((method, path), [])
            status, doc = queue.pop(0) if queue else (200, {"task_number": state.tasks})
            if method == "POST" and path.endswith("/import") and (status < 300 or state.commit_on_error):
                state.tasks += len(body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str, token: str = "legacy0token", retries: int = 3) -> LabelStudioClient:
    return LabelStudioClient(url, token, retries=retries, backoff=0.0, sleep=lambda s: None)


def test_get_retries_5xx_then_succeeds(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.script[("GET", "/api/projects/1")] = [(503, {}), (502, {}), (200, {"id": 1})]
    assert _client(url).get("/api/projects/1") == {"id": 1}
    assert [s[1] for s in state.seen] == ["/api/projects/1"] * 3
    assert all(s[2] == "Token legacy0token" for s in state.seen)


def test_get_gives_up_after_retries_one_line(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.script[("GET", "/api/projects/1")] = [(500, {"detail": "boom"})] * 5
    with pytest.raises(LabelStudioError) as e:
        _client(url, retries=2).get("/api/projects/1")
    assert "HTTP 500" in str(e.value) and "boom" in str(e.value) and "\n" not in str(e.value)
    assert "legacy0token" not in str(e.value) and "legacy0token" not in repr(_client(url))


def test_lost_answer_of_committed_batch_is_not_resent(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.commit_on_error = True
    state.script[("POST", "/api/projects/1/import")] = [(502, {})]
    assert _import(_client(url), 1, [{"data": {}}] * 4) is None
    assert state.tasks == 4
    assert sum(1 for s in state.seen if s[0] == "POST") == 1


def test_failed_batch_is_sent_again(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.script[("POST", "/api/projects/1/import")] = [(503, {}), (201, {"task_count": 3, "task_ids": [7, 8, 9]})]
    assert _import(_client(url), 1, [{"data": {}}] * 3) == [7, 8, 9]
    assert state.tasks == 3
    assert sum(1 for s in state.seen if s[0] == "POST") == 2


def test_personal_access_token_refresh_flow(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.script[("POST", "/api/token/refresh/")] = [(200, {"access": "acc1"}), (200, {"access": "acc2"})]
    state.script[("GET", "/api/projects/1")] = [(401, {"detail": "expired"}), (200, {"id": 1})]
    assert _client(url, PAT).get("/api/projects/1") == {"id": 1}
    assert [(m, p, a) for m, p, a in state.seen] == [
        ("POST", "/api/token/refresh/", ""), ("GET", "/api/projects/1", "Bearer acc1"),
        ("POST", "/api/token/refresh/", ""), ("GET", "/api/projects/1", "Bearer acc2"),
    ]


def test_refused_token_is_one_line_without_the_token(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.script[("GET", "/api/projects/1")] = [(401, {"detail": "Invalid token"})]
    with pytest.raises(LabelStudioError) as e:
        _client(url, "s3cr3t-legacy").get("/api/projects/1")
    assert "refused the legacy token" in str(e.value) and "s3cr3t" not in str(e.value)
