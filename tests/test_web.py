"""What a worker's web port serves: /metrics and a status line, nothing else (Faust's table and router
views listed every table's contents and the partition assignment, unauthenticated)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from lab.local import LocalStack

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_only_metrics_and_status_are_served():
    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        port = worker.web_port
        status, body = _get(port, "/metrics")
        assert status == 200 and b"reelstream_events_total" in body
        assert _get(port, "/") == (200, b'{"status":"OK"}')
        for path in ("/table/", "/table/users/", "/router/", "/router/users/", "/graph/", "/stats/", "/performance/",
                     "/assignment/", "/signal/"):  # fmt: skip
            assert _get(port, path)[0] == 404, path
