"""`reelstream recs-api`: a user's current list over HTTP, from the compacted recommendations topic a real
worker writes; a bearer token or nothing; erasure honoured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from lab.local import LocalStack, free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BEARER = "s3cret-read-token"


def _get(port: int, path: str, token: str | None = BEARER) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if e.headers.get_content_type() == "application/json" else {}
    except OSError:
        return 0, {}


def _event(n: int, user: str, video: str, type_: str = "like") -> bytes:
    return orjson.dumps({"schema_version": 1, "event_id": f"e{n}", "type": type_, "user_id": user, "video_id": video,
                         "ts": 1000.0 + n})  # fmt: skip


def test_the_read_api_refuses_to_start_without_a_token():
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSTREAM_")}
    done = subprocess.run([sys.executable, "-m", "reelstream.cli", "recs-api"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "REELSTREAM_READ_API__TOKEN" in done.stderr


def test_a_user_s_current_list_is_served_with_the_token_only_and_forgotten_at_erasure(tmp_path):
    from lab.recording import read_topic
    from streams.producer import make_producer, produce

    with LocalStack() as stack:
        stack.start_broker()
        stack.start_worker()
        producer = make_producer(stack.bootstrap)
        for n, (user, video) in enumerate([("ann", "v1"), ("bob", "v2"), ("ann", "v3"), ("cat", "v1")]):
            produce(producer, "events", _event(n, user, video), user.encode())
        producer.flush(10)
        stack.wait_consumed(4)
        port = free_port()
        log = tmp_path / "api.log"
        env = {**os.environ, "REELSTREAM_READ_API__TOKEN": BEARER, "REELSTREAM_READ_API__PORT": str(port),
               "REELSTREAM_BOOTSTRAP_SERVERS": stack.bootstrap}  # fmt: skip
        api = subprocess.Popen([sys.executable, "-m", "reelstream.cli", "recs-api"], cwd=ROOT, env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for(lambda: _get(port, "/ready", None)[0] == 200, 60, "the read API ready", [log], api)
            latest = {}
            for r in read_topic(stack.bootstrap, "recommendations"):
                latest[r.key.decode()] = None if r.value is None else orjson.loads(r.value)
            status, body = _get(port, "/users/ann/recommendations")
            assert status == 200 and body == latest["ann"] and body["source_event_id"] == "e2"  # the latest one
            assert body["items"] and all(i["video_id"] not in ("v1", "v3") for i in body["items"])
            assert _get(port, "/users/ann/recommendations", None)[0] == 401
            assert _get(port, "/users/ann/recommendations", "wrong")[0] == 401
            assert _get(port, "/users/nobody/recommendations")[0] == 404
            assert _get(port, "/table/")[0] == 404  # nothing else is served
            # Erasure: the worker tombstones the user's list; the API forgets it.
            produce(producer, "events", orjson.dumps({"schema_version": 1, "event_id": "d", "type": "user_delete",
                                                      "user_id": "ann", "ts": 2000.0}), b"ann")  # fmt: skip
            producer.flush(10)
            wait_for(lambda: _get(port, "/users/ann/recommendations")[0] == 404, 60, "ann forgotten", [log], api)
            assert _get(port, "/users/bob/recommendations")[0] == 200
        finally:
            api.terminate()
            api.wait(10)
        assert BEARER not in log.read_text()
