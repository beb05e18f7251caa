"""The Faust agents through `agent.test_context()` (no broker): tables, batching, DLQ wiring."""

from __future__ import annotations

import asyncio
import json

import pytest

from models.recs.serving import load_recommender
from models.text.base import load_comment_models
from streams.app import create_app
from streams.settings import Settings
from tests.sinks import Sink


@pytest.fixture
def app_and_sink(tmp_path):
    # nothing is reached: outputs go to the sink; the users table's RocksDB store in this test's directory
    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path))
    sink = Sink()
    app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation), output=sink)
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
    assert [r[0] for r in users.get("u1")["events"]] == ["e1"]
    assert users.get("u2")["events"][0][4] == 0.5  # watch ratio
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
    assert app.pipeline.catalog.inactive == {"v1"}


def test_the_catalog_keeps_its_inactive_set_from_changelog_batches_too(app_and_sink):
    """Other workers' catalog writes (and recovery) arrive as changelog batches, not as local writes."""
    from types import SimpleNamespace

    catalog = app_and_sink[0].pipeline.catalog

    def record(key, value):
        return SimpleNamespace(key=key, value=value, message=SimpleNamespace(key=json.dumps(key).encode(), value=value, partition=0))

    catalog.apply_changelog_batch([record("v1", b'"blocked"'), record("v2", b'"removed"'), record("v3", b'"active"')])
    assert catalog.inactive == {"v1", "v2"}
    catalog.apply_changelog_batch([record("v2", b'"active"'), record("v1", None)])
    assert catalog.inactive == set()


def test_replica_records_applied_together_reach_the_model_in_one_call(app_and_sink):
    """Faust applies a global table's changelog record by record; the item-vectors replica hands records
    that arrive within its coalescing window to the model at once (one index upsert per refresh)."""
    from types import SimpleNamespace

    replica = app_and_sink[0].tables["item-vectors"]
    calls = []
    replica.on_batch = calls.append

    def record(key, value):
        raw = None if value is None else json.dumps(value).encode()
        message = SimpleNamespace(key=json.dumps(key).encode(), value=raw, partition=0)
        return SimpleNamespace(key=key, value=value, message=message)

    async def run():
        for n in range(3):
            replica.apply_changelog_batch([record(f"v{n}", [float(n)] * 2)])
        replica.apply_changelog_batch([record("v0", None)])
        seen_before = list(calls)
        await asyncio.sleep(replica.coalesce_s * 3)
        return seen_before

    assert asyncio.run(run()) == []
    assert calls == [{"v0": None, "v1": [1.0, 1.0], "v2": [2.0, 2.0]}]
    replica.apply_changelog_batch([record("v3", [3.0, 3.0])])  # no running loop: handed over at once
    assert calls[-1] == {"v3": [3.0, 3.0]}


def test_every_table_a_worker_reads_in_full_is_global(app_and_sink):
    """The catalog, item vectors and user Grams must reach every worker whatever the group's size: a
    non-global table gets only a worker's own partitions plus its standby replicas'."""
    tables = app_and_sink[0].tables
    assert {name for name, t in tables.items() if t.is_global} == {"catalog", "item-vectors", "user-gram", "models"}
