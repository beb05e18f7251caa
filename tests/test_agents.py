"""The Faust agents through `agent.test_context()` (no broker): tables, batching, DLQ wiring."""

from __future__ import annotations

import asyncio
import json

import pytest

from reelstream.settings import Settings
from streams.app import create_app
from streams.models import load_recommender, load_scorer
from tests.sinks import Sink


@pytest.fixture
def app_and_sink():
    settings = Settings(bootstrap_servers="127.0.0.1:1")  # nothing is reached: outputs go to the sink
    sink = Sink()
    app = create_app(settings, load_recommender(settings), load_scorer(settings), output=sink)
    app.finalize()
    return app, sink


def _event(event_id, user, video, type_="like", **extra):
    body = {"schema_version": 1, "event_id": event_id, "type": type_, "user_id": user, "video_id": video, "ts": 1.0}
    return json.dumps({**body, **extra}).encode()


def test_interactions_agent_updates_the_users_table_and_emits(app_and_sink):
    app, sink = app_and_sink

    async def run():
        async with app.agents["interactions"].test_context() as agent:
            await agent.put(key=b"u1", value=_event("e1", "u1", "v1"))
            await agent.put(key=b"u1", value=_event("e1", "u1", "v1"))  # duplicate
            await agent.put(key=b"u1", value=b"\xff not utf-8")
            await agent.put(key=b"u2", value=_event("e2", "u2", "v1", "watch", watch_ms=5, duration_ms=10))
            await asyncio.sleep(0.3)

    asyncio.run(run())
    users = app.pipeline.users
    assert [r[0] for r in users["u1"]["events"]] == ["e1"]
    assert users["u2"]["events"][0][4] == 0.5  # watch ratio
    reasons = [v["reason"] for v in sink.values("events.dlq")]
    assert reasons == ["bad_encoding"]
    assert {r["user_id"] for r in sink.values("recommendations") if r} == {"u1", "u2"}


def test_catalog_agent_blocks_videos(app_and_sink):
    app, sink = app_and_sink

    async def run():
        async with app.agents["catalog"].test_context() as agent:
            await agent.put(key=b"v1", value=b'{"video_id": "v1", "type": "upload", "ts": 1}')
            await agent.put(key=b"v1", value=b'{"video_id": "v1", "type": "block", "ts": 2}')
            await agent.put(key=b"v1", value=b'{"video_id": "v1", "type": "upload", "ts": 3}')
            await asyncio.sleep(0.3)

    asyncio.run(run())
    assert app.pipeline.catalog["v1"] == "blocked"  # a re-upload does not lift a block
