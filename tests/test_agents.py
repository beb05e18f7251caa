"""The Faust agents through `agent.test_context()` (no broker): tables, batching, DLQ wiring."""

from __future__ import annotations

import asyncio
import json

import numpy as np
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
    assert list(app.pipeline.recommender.exploration.pool()) == []  # shown in no exploration slot either


def test_the_catalog_keeps_its_inactive_set_from_changelog_batches_too(app_and_sink):
    """Other workers' catalog writes (and recovery) arrive as changelog batches, not as local writes."""
    from types import SimpleNamespace

    catalog = app_and_sink[0].pipeline.catalog

    def record(key, value):
        return SimpleNamespace(key=key, value=value, message=SimpleNamespace(key=json.dumps(key).encode(), value=value, partition=0))

    catalog.apply_changelog_batch([record("v1", b'"blocked"'), record("v2", b'"removed"'), record("v3", b'"active"')])
    assert catalog.inactive == {"v1", "v2"}
    pool = app_and_sink[0].pipeline.recommender.exploration
    assert list(pool.pool()) == ["v3"]  # another worker's upload: exploration slots here too
    catalog.apply_changelog_batch([record("v2", b'"active"'), record("v1", None)])
    assert catalog.inactive == set()
    assert list(pool.pool()) == ["v2", "v3"]  # the newest first: never shown yet


def test_replica_records_applied_together_reach_the_model_in_one_call(app_and_sink):
    """Faust applies a global table's changelog record by record; the item-vectors replica hands records
    that arrive within its coalescing window to the model at once (one index upsert per refresh)."""
    from types import SimpleNamespace

    replica = app_and_sink[0].tables["item-vectors"]
    calls = []
    replica.on_batch = calls.append

    f = Settings().recs.factors

    def record(key, value):
        raw = None if value is None else json.dumps(value).encode()
        message = SimpleNamespace(key=json.dumps(key).encode(), value=raw, topic="item-vectors", partition=0,
                                  offset=0, timestamp=0.0)  # fmt: skip
        return SimpleNamespace(key=key, value=value, message=message)

    async def run():
        for n in range(3):
            replica.apply_changelog_batch([record(f"v{n}", [float(n)] * f)])
        replica.apply_changelog_batch([record("v0", None)])
        seen_before = list(calls)
        await asyncio.sleep(replica.coalesce_s * 3)
        return seen_before

    assert asyncio.run(run()) == []
    assert calls == [{"v0": None, "v1": [1.0] * f, "v2": [2.0] * f}]
    replica.apply_changelog_batch([record("v3", [3.0] * f)])  # no running loop: handed over at once
    assert calls[-1] == {"v3": [3.0] * f}
    replica.apply_changelog_batch([record("v4", [3.0] * (f - 1)), record("v5", [1e30] * f)])  # not applied
    assert calls[-1] == {"v3": [3.0] * f}


def test_a_version_is_served_once_the_replica_has_read_its_fits_vectors(app_and_sink):
    """The version record can be read before the fit's vectors (other partitions, another fetch): served
    then, its users would be re-served against the previous vectors. It waits until the item-vectors replica
    has read up to the offsets the record names; a rejected record counts as read."""
    from types import SimpleNamespace

    from contracts.models import MODEL_KEY, vector_record

    app = app_and_sink[0]
    rec, f = app.pipeline.recommender, Settings().recs.factors
    vectors, models = app.tables["item-vectors"], app.tables["models"]

    def event(topic, partition, offset, key, value):
        message = SimpleNamespace(key=json.dumps(key).encode(), value=json.dumps(value).encode(), topic=topic,
                                  partition=partition, offset=offset, timestamp=0.0)  # fmt: skip
        return SimpleNamespace(key=key, value=value, message=message)

    record = {"schema_version": 1, "model_version": "als-new", "factors": f, "gram": np.eye(f).ravel().tolist(),
              "item_vectors_end": {"0": 2, "2": 1}}  # fmt: skip
    before = rec.model_version
    models.apply_changelog_batch([event("models", 0, 0, MODEL_KEY, record)])
    assert rec.model_version == before  # no vector of the fit read yet
    vectors.apply_changelog_batch([event("item-vectors", 0, 0, "v1", vector_record([0.1] * f, "als-new", True)),
                                   event("item-vectors", 0, 1, "v2", vector_record([0.2] * f, "als-new", True))])  # fmt: skip
    assert rec.model_version == before  # partition 2's still to come
    vectors.apply_changelog_batch([event("item-vectors", 2, 0, "v3", [1e30] * f)])  # rejected, but read
    assert rec.model_version == "als-new"
    assert rec.index_size() >= 2


def test_every_table_a_worker_reads_in_full_is_global(app_and_sink):
    """The catalog, item vectors and user Grams must reach every worker whatever the group's size: a
    non-global table gets only a worker's own partitions plus its standby replicas'."""
    tables = app_and_sink[0].tables
    assert {name for name, t in tables.items() if t.is_global} == {"catalog", "item-vectors", "user-gram", "models"}


def test_the_item_side_is_read_back_by_value_from_its_changelog(tmp_path):
    """One worker's item side, written behind its changelog; another worker (an empty disk) whose store holds
    those changelog records, as recovery writes them: its restored partitions hold the same state by value
    (each video's users and confidences, each user's factor and the model version it came with). A record
    that is not item state is counted, not applied."""
    import numpy as np
    import orjson

    from monitoring import metrics
    from streams.items import parse_state_key, state_key
    from streams.pipeline import Message
    from streams.topics import ITEM_STATE_TABLE, changelog, partition_for
    from streams.transport.rocks_store import RocksPartitions

    def worker(name):
        settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path / name))
        sink = Sink()
        app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation), output=sink)
        app.finalize()
        return settings, app, sink

    settings, a, sink = worker("a")
    f = settings.recs.factors
    side = a.item_side
    rng = np.random.default_rng(0)

    def message(partition, offset, items):
        return Message("interactions-by-video", partition, offset, 0.0, None, orjson.dumps(items))

    # videos of partitions 0 and 1 (a message holds only its own partition's videos)
    of = {p: [f"v{n}" for n in range(100) if partition_for(f"v{n}".encode(), settings.partitions) == p] for p in (0, 1)}
    v1, v2, v3 = of[0][0], of[0][1], of[1][0]
    side.apply([message(0, 0, [[v1, "u1", rng.normal(size=f).tolist(), 2.0], [v2, "u1", rng.normal(size=f).tolist(), 1.5]]),
                message(1, 0, [[v3, "u2", rng.normal(size=f).tolist(), -1.0]])])  # fmt: skip
    side.new_model("batch-1")  # factors so far belong to the old version; the next ones to batch-1
    side.apply([message(0, 1, [[v1, "u2", rng.normal(size=f).tolist(), 3.0], [v2, "u1", None, 0.0]])])
    side.apply([message(1, 1, [[v1, "u3", rng.normal(size=f).tolist(), 1.0]])])  # v1 is not partition 1's: rejected
    table = a.tables[ITEM_STATE_TABLE]
    asyncio.run(table.flush())
    topic = changelog(settings, ITEM_STATE_TABLE)
    logged = [(k, v) for t, k, v in sink.sent if t == topic]
    assert {orjson.loads(k) for k, _ in logged} == {state_key(0, "u1"), state_key(0, "u2"), state_key(1, "u2")}

    _, b, _ = worker("b")
    store = RocksPartitions(b.tables[ITEM_STATE_TABLE].data)
    for offset, (key, value) in enumerate(logged):
        store.write(parse_state_key(orjson.loads(key))[0], [(key, value)], offset)
    store.write(0, [(orjson.dumps(state_key(0, "u9")), b'["x", "not base64", {"v1": 1.0}]')], len(logged))
    invalid = metrics.DLQ.labels("invalid_item_state")._value.get()
    b.item_side.new_model("batch-1")
    b.tables[ITEM_STATE_TABLE].on_ready({0, 1})
    assert metrics.DLQ.labels("invalid_item_state")._value.get() == invalid + 1
    def users_of(trainer):  # a video left with no user is the same as one never seen
        return {v: users for v, users in trainer.video_users.items() if users}

    for p in (0, 1):
        mine, theirs = side.trainers[p], b.item_side.trainers[p]
        assert users_of(theirs) == users_of(mine) and theirs.user_videos == mine.user_videos
        assert theirs.user_factors.keys() == mine.user_factors.keys()
        assert all(np.array_equal(theirs.user_factors[u], mine.user_factors[u]) for u in mine.user_factors)
    assert users_of(side.trainers[0]) == {v1: {"u1": 2.0, "u2": 3.0}}
    assert "u3" not in side.trainers[1].user_videos and [r for t, _, r in sink.sent if t == settings.topics.dlq]
    assert set(side.trainers[0].user_factors) == {"u2"}  # u1's factor came before batch-1
    assert b.item_side.trainers[0].dirty == {v1}  # restored videos are solved again

    # In a running worker the state is read back just after Faust's recovery, not inside it (blocking there
    # for seconds left a restarted worker idle), and before a message of the partition is applied.
    _, c, _ = worker("c")
    store = RocksPartitions(c.tables[ITEM_STATE_TABLE].data)
    for offset, (key, value) in enumerate(logged):
        store.write(parse_state_key(orjson.loads(key))[0], [(key, value)], offset)
    c.item_side.new_model("batch-1")

    async def recover() -> None:
        c.tables[ITEM_STATE_TABLE].on_ready({0, 1})
        assert c.item_side.trainers == {}  # not yet
        c.item_side.apply([message(0, 2, [[v2, "u4", rng.normal(size=f).tolist(), 1.0]])])
        assert users_of(c.item_side.trainers[0]) == {v1: {"u1": 2.0, "u2": 3.0}, v2: {"u4": 1.0}}  # read back first
        await asyncio.sleep(0)
        assert users_of(c.item_side.trainers[1]) == users_of(side.trainers[1])

    asyncio.run(recover())


def test_a_partition_kept_only_as_a_standby_leaves_the_item_side_and_is_read_back_when_it_returns(app_and_sink):
    """Faust's rebalance hands tables every changelog partition assigned, standby replicas included. A
    partition that moved to another worker (this one keeps its standby) must leave the item side: kept, its
    state went stale while the other worker wrote it, and was not read back when the partition returned
    (the rebalance test's state left behind after a refit: users this worker never saw)."""
    import orjson
    from faust.types import TP

    from streams.items import encode_state, state_key
    from streams.topics import ITEM_STATE_TABLE, changelog
    from streams.transport.rocks_store import RocksPartitions

    app, settings = app_and_sink[0], Settings()
    table, side, f = app.tables[ITEM_STATE_TABLE], app.item_side, settings.recs.factors
    topic = changelog(settings, ITEM_STATE_TABLE)
    store = RocksPartitions(table.data)

    def write(partition, offset, user, confidences):
        value = orjson.dumps(encode_state(("", np.ones(f, np.float32), confidences)))
        store.write(partition, [(orjson.dumps(state_key(partition, user)), value)], offset)

    write(0, 0, "u1", {"a": 1.0})
    write(1, 0, "u2", {"b": 2.0})
    table.on_ready({0, 1})
    assert {p: set(t.user_videos) for p, t in side.trainers.items()} == {0: {"u1"}, 1: {"u2"}}

    # Partition 1 moves to another worker; this one keeps its changelog as a standby.
    app.assignor.assigned_actives = lambda: {TP(topic, 0), TP(settings.topics.events, 0)}
    asyncio.run(table.on_rebalance({TP(topic, 0), TP(topic, 1)}, set(), set()))
    assert set(side.trainers) == {0}
    write(1, 1, "u3", {"c": 1.5})  # the other owner's writes, as the standby replica stores them
    write(1, 2, "u2", {"b": 3.0})

    app.assignor.assigned_actives = lambda: {TP(topic, 0), TP(topic, 1)}
    asyncio.run(table.on_rebalance({TP(topic, 0), TP(topic, 1)}, set(), set()))
    table.on_ready({0, 1})  # it comes back: its state as the other owner left it
    assert side.trainers[1].video_users == {"b": {"u2": 3.0}, "c": {"u3": 1.5}}


def test_partitions_gone_without_a_revocation_are_let_go_at_the_next_assignment(app_and_sink):
    """Ownership is read from the assignment at each recovery, not only from the revocation signal: factors
    and partial Grams of partitions another worker now owns leave even if no revocation named them (kept,
    this worker would publish its stale partial of them at every tick, over the owner's)."""
    from faust.types import TP

    from streams.topics import USERS_TABLE, changelog

    app, _ = app_and_sink
    settings = Settings()
    users, rec = app.tables[USERS_TABLE], app.pipeline.recommender
    topic = changelog(settings, USERS_TABLE)

    async def run():
        app.assignor.assigned_actives = lambda: {TP(topic, p) for p in range(4)}
        users.on_ready({0, 1, 2, 3})
        await asyncio.sleep(0.05)  # the (empty) partitions' restore
        for p in range(4):
            rec.user_factors[f"u{p}"] = (p, np.ones(settings.recs.factors))
            rec._partials[p] = np.eye(settings.recs.factors)
        app.assignor.assigned_actives = lambda: {TP(topic, p) for p in (0, 1)}
        users.on_ready({0, 1})  # partitions 2 and 3 went to another worker; no revocation said so

    asyncio.run(run())
    assert set(rec.partials()) == {0, 1} and set(rec.user_factors) == {"u0", "u1"}


def test_a_model_loaded_from_model_dir_is_a_batch_fit_the_item_side_leaves_alone(tmp_path):
    """The videos of a saved model (model_dir, at start or swapped in) are a batch fit's: the item side keeps
    no interactions of theirs and never re-solves them; an upload the model does not have is its own."""
    import numpy as np
    import orjson

    from lab.state_bench import build_model, video_id
    from models.recs.serving import load_recommender
    from streams.pipeline import Message
    from streams.topics import partition_for

    build_model(tmp_path / "model", videos=50, factors=8)
    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path / "data"))
    settings = settings.model_copy(update={"recs": settings.recs.model_copy(update={"model_dir": str(tmp_path / "model"), "factors": 8})})
    app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation), output=Sink())
    app.finalize()
    side = app.item_side
    assert side.batch_videos == {video_id(n) for n in range(50)}
    new = next(v for v in (f"new{n}" for n in range(100)) if partition_for(v.encode(), settings.partitions) == 0)
    old = next(video_id(n) for n in range(50) if partition_for(video_id(n).encode(), settings.partitions) == 0)
    factor = np.full(8, 0.1).tolist()
    side.apply([Message("interactions-by-video", 0, 0, 0.0, None, orjson.dumps([[old, "u1", factor, 2.0], [new, "u1", factor, 1.0]]))])
    assert side.trainers[0].video_users == {new: {"u1": 1.0}}
    ids, _ = side.tick()
    assert ids == [new]


@pytest.mark.parametrize("rebalance", ["generation", "suspended"])
def test_comment_scores_are_not_applied_once_a_rebalance_began_while_the_model_ran(tmp_path, rebalance):
    """What the old owner would write after a rebalance began (the new owner already read the changelog) is
    discarded, like Faust's own old-generation events: no flag, no sentiment row, no item message; the
    partition's owner scores the comment again from the committed offset. Without the rebalance, applied."""
    from monitoring import metrics

    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path))
    sink, scorer = Sink(), load_comment_models(settings.moderation)
    app = create_app(settings, load_recommender(settings.recs, settings.index), scorer, output=sink)
    app.finalize()
    score, bumped = scorer.score, []

    def score_then_rebalance(texts, langs):  # on the inference thread, as a rebalance would come
        out = score(texts, langs)
        if not bumped:
            bumped.append(True)
            if rebalance == "generation":
                app.consumer_generation_id += 1
            else:
                app.flow_control.suspend()
        return out

    scorer.score = score_then_rebalance
    comment = _event("c1", "u1", "v1", "comment", text="what a lovely video", lang="en")
    discarded = metrics.REGISTRY.get_sample_value("reelstream_results_discarded_total", {"step": "moderation"}) or 0.0

    async def run():
        async with app.agents["interactions"].test_context() as agent:
            await agent.put(key=b"u1", value=comment)
            await asyncio.sleep(0.3)
        sink.sent.clear()
        async with app.agents["moderation"].test_context() as agent:
            await agent.put(key=b"u1", value=comment)  # scored, then discarded
            await asyncio.sleep(0.5)
            app.flow_control.resume()
            await agent.put(key=b"u1", value=comment)  # the redelivery, in the new generation: applied
            await asyncio.sleep(0.5)

    asyncio.run(run())
    after = metrics.REGISTRY.get_sample_value("reelstream_results_discarded_total", {"step": "moderation"})
    assert after == discarded + 1
    flags = [f for f in sink.values("moderation-flags") if f]
    assert [f["event_id"] for f in flags] == ["c1"]  # once: the redelivery's
    assert app.pipeline.users.get("u1")["events"][0][5] is not None  # its sentiment, from the redelivery


def test_a_restore_waits_out_a_rebalance_and_keeps_only_partitions_still_owned(app_and_sink):
    """Restores and refreshes run in micro-batches across awaits: during a rebalance (flow suspended) they
    wait for its assignment, then go on only with users of partitions still this worker's."""
    from faust.types import TP

    from contracts.history import HistoryRow
    from streams.topics import USERS_TABLE, changelog

    app, _ = app_and_sink
    settings = Settings()
    users, rec = app.tables[USERS_TABLE], app.pipeline.recommender
    topic = changelog(settings, USERS_TABLE)
    for p in range(4):
        users.put(f"u{p}", {"events": [HistoryRow(f"e{p}", "v1", "like", 1.0).stored()]}, p)

    async def run():
        app.flow_control.suspend()  # a rebalance began
        app.assignor.assigned_actives = lambda: {TP(topic, p) for p in range(4)}
        users.on_ready({0, 1, 2, 3})
        await asyncio.sleep(0.1)
        assert rec.user_factors == {}  # waiting for the rebalance's assignment
        app.assignor.assigned_actives = lambda: {TP(topic, p) for p in (0, 1)}
        app.flow_control.resume()
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert set(rec.user_factors) == {"u0", "u1"}
