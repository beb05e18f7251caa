"""The users table's local RocksDB store (REELSTREAM_STORE=rocksdb, the default), through real worker
processes on the embedded broker: a restart on the worker's own disk reads its store and only the
changelog's tail, a kill -9 leaves the store equal to the changelog (never ahead of it), and a changelog
whose beginning the broker deleted before a worker recovered from it is reported, not recovered around."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from lab.local import LocalStack, wait_for
from lab.recording import high_watermarks
from tests.sinks import Sink

pytestmark = pytest.mark.integration

USERS, EVENTS = 60, 2000


def _records(settings, n: int, start: int = 0) -> list:
    from lab.recording import Record

    out = []
    for i in range(start, start + n):
        user = f"ls-{i % USERS}"
        event = {"schema_version": 1, "event_id": f"e{i}", "type": "watch", "user_id": user, "video_id": f"v{i % 97}",
                 "ts": 1000.0 + i, "watch_ms": 9000, "duration_ms": 10000}  # fmt: skip
        out.append(Record(settings.topics.events, -1, -1, None, user.encode(), orjson.dumps(event)))
    return out


def _expected(n: int) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for i in range(n):
        out.setdefault(f"ls-{i % USERS}", set()).add(f"e{i}")
    return out


def _store_contents(data_dir: Path) -> dict[str, dict]:
    """Every user record in a stopped worker's RocksDB partitions (read-only)."""
    from rocksdict import AccessType, Options, Rdict

    out: dict[str, dict] = {}
    paths = sorted(p for p in data_dir.rglob("users-*.db") if p.is_dir())
    assert paths, f"no users store under {data_dir}"
    for path in paths:
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if not key.startswith(b"__faust"):
                    out[orjson.loads(key)] = orjson.loads(value)
        finally:
            db.close()
    return out


def _changelog(bootstrap: str, settings) -> dict[str, dict]:
    from lab.chaos import last_values
    from streams.topics import USERS_TABLE, changelog

    logged = last_values(bootstrap, changelog(settings, USERS_TABLE))
    return {orjson.loads(k): orjson.loads(v) for k, v in logged.items() if v is not None}


def _ids(record: dict) -> set[str]:
    from contracts.history import EVENT_ID

    return {row[EVENT_ID] for row in record["events"]}


def test_a_kill_9_and_a_restart_on_the_same_disk_read_only_the_tail_and_lose_nothing():
    from lab.chaos import Feeder, uncommitted
    from lab.local import total
    from streams.settings import Settings
    from streams.topics import USERS_TABLE, changelog

    s = Settings()
    with LocalStack(env={"REELSTREAM_PARTITIONS": "2"}) as stack:
        stack.start_broker()
        worker = stack.start_worker()
        feeder = Feeder(stack.bootstrap, _records(s, EVENTS // 2), rate=200)
        feeder.start()
        # kill -9 in the middle of live processing, after several commits: stored, acknowledged and
        # unacknowledged writes all exist
        wait_for(lambda: total(worker.metrics(), "reelstream_events_total") >= EVENTS // 4, 60, "events flowing",
                 [worker.log], worker.proc)  # fmt: skip
        worker.stop(signal.SIGKILL)
        feeder.join()
        written = sum(high_watermarks(stack.bootstrap, changelog(s, USERS_TABLE), 2).values())
        worker = stack.start_worker(data_dir=worker.data_dir)
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "input committed", [worker.log], worker.proc)
        applied = worker.metrics().get("reelstream_changelog_records_applied_total", 0.0)
        # It read its own store and the changelog past the store's offset, not the whole changelog.
        print(f"changelog records at the kill: {written}, applied at the restart: {applied:.0f}")
        assert applied < written / 2, (applied, written)
        second = Feeder(stack.bootstrap, _records(s, EVENTS // 2, start=EVENTS // 2), rate=None)
        second.start()
        second.join()
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "input committed", [worker.log], worker.proc)
        wait_for(lambda: worker.metrics().get("reelstream_users") == USERS, 30, "users counted", [worker.log])
        wait_for(lambda: total(worker.metrics(), "reelstream_factors_restored_total") > 0, 30, "users restored",
                 [worker.log], worker.proc)  # fmt: skip
        served = _popularity_served(stack, s, worker)
        worker.stop(signal.SIGTERM)
        logged = _changelog(stack.bootstrap, s)
        stored = _store_contents(worker.data_dir)
    expected = {**_expected(EVENTS), "probe": {PROBE["event_id"]}}
    assert {u: _ids(r) for u, r in logged.items()} == expected  # nothing lost, nothing twice (a set per user)
    assert all(len(r["events"]) == len(expected[u]) for u, r in logged.items())
    assert stored == logged  # the local store is the changelog, by value
    # Popularity (what a user nobody can place is served) counts every event once, as without the kill: the
    # restart recounted the stored histories, and the redelivered tail was not counted again.
    # (An exploration slot may take the list's last position: the popularity part is compared.)
    uninterrupted = list(_popularity_uninterrupted(s).items())
    assert len(served) >= len(uninterrupted) - 1
    assert served == pytest.approx(dict(uninterrupted[: len(served)]), rel=1e-5)


PROBE = {"schema_version": 1, "event_id": "probe-e", "type": "like", "user_id": "probe", "video_id": "v-unknown",
         "ts": 1000.0 + EVENTS}  # fmt: skip


def _popularity_served(stack, settings, worker) -> dict[str, float]:
    """The list a new user gets whose only video no model knows: the worker's popularity, video -> score."""
    from lab.chaos import last_values
    from lab.local import total
    from streams.producer import make_producer

    producer = make_producer(stack.bootstrap)
    producer.produce(settings.topics.events, key=b"probe", value=orjson.dumps(PROBE))
    producer.flush(30)
    wait_for(lambda: b"probe" in last_values(stack.bootstrap, settings.topics.recommendations), 60, "probe served",
             [worker.log], worker.proc)  # fmt: skip
    rec = orjson.loads(last_values(stack.bootstrap, settings.topics.recommendations)[b"probe"])
    assert rec["model_version"] == "popularity-v1", rec
    assert total(worker.metrics(), "reelstream_events_total") > 0
    return {item["video_id"]: item["score"] for item in rec["items"] if item["reason"] != "explore"}


def _popularity_uninterrupted(settings) -> dict[str, float]:
    """The same list from one in-process PopularityRecommender fed every event once, in order."""
    from contracts.events import parse_event
    from contracts.history import HistoryRow
    from models.recs.confidence import event_weight
    from models.recs.popularity import PopularityRecommender

    pop = PopularityRecommender(settings.recs.popularity_half_life_s)
    for record in [*_records(settings, EVENTS), None]:
        raw = record.value if record is not None else orjson.dumps(PROBE)
        event = parse_event(raw, max_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars)
        row = HistoryRow.from_event(event).stored()
        pop.observe(event.video_id, max(0.0, event_weight(row, settings.recs.weights)), event.ts)
    return dict(pop.recommend({"v-unknown": 1.0}, settings.recs.top_k))


def test_a_changelog_whose_start_was_deleted_is_dead_lettered_at_recovery():
    """The embedded broker keeps 5 MiB per partition: 6 MiB of users-changelog records push its first ones
    out before any worker read them. A worker recovering that partition reports the hole."""
    from confluent_kafka import Consumer, TopicPartition

    from lab.recording import read_topic
    from streams.producer import make_producer, produce
    from streams.settings import Settings
    from streams.topics import USERS_TABLE, changelog

    s = Settings()
    topic = changelog(s, USERS_TABLE)
    with LocalStack(env={"REELSTREAM_PARTITIONS": "1"}) as stack:
        stack.start_broker()
        worker = stack.start_worker()  # creates the topics, then leaves
        worker.stop(signal.SIGTERM)
        producer = make_producer(stack.bootstrap, **{"message.max.bytes": 2_000_000})
        # ~200 KB each, and valid (a record the worker would not write is dead-lettered, never stored)
        rows = [[f"e{j:04d}-{'x' * 120}", f"v-{'y' * 120}", "like", 1.0, 0.0, None] for j in range(750)]
        for i in range(30):
            produce(producer, topic, orjson.dumps({"events": rows}), orjson.dumps(f"filler-{i}"), partition=0)
            producer.flush(30)
        c = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "local-store-test"})
        low, _high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.close()
        assert low > 0, "the broker kept the whole changelog: nothing to detect"
        worker = stack.start_worker()  # an empty store: recovery needs the changelog from offset 0
        wait_for(lambda: worker.metrics().get('reelstream_dlq_messages_total{reason="changelog_gap"}', 0) > 0, 60,
                 "the hole reported", [worker.log], worker.proc)  # fmt: skip
        assert worker.metrics()['reelstream_dlq_messages_total{reason="changelog_gap"}'] == low
        dead = [orjson.loads(r.value) for r in read_topic(stack.bootstrap, s.topics.dlq)]
        assert [(d["reason"], d["topic"], d["partition"], d["offset"]) for d in dead] == [("changelog_gap", topic, 0, 0)]
        assert f"offsets 0..{low - 1}" in dead[0]["detail"]
        assert "changelog_gap" in worker.log.read_text()


def test_a_hole_that_opens_under_a_standby_reading_a_changelog_is_dead_lettered():
    """Two workers, one partition: one owns it, the other keeps a standby copy of its users table by reading
    the changelog as it grows. While the standby is paused (SIGSTOP, shorter than the session timeout, so
    no rebalance), 6 MiB of changelog records push the ones it has not read out of the embedded broker; when
    it resumes, its next fetch is out of range and the reset is reported as a changelog gap."""
    from confluent_kafka import Consumer, TopicPartition

    from lab.local import total
    from lab.recording import read_topic
    from lab.scale import owned_partitions
    from streams.producer import make_producer, produce
    from streams.settings import Settings
    from streams.topics import USERS_TABLE, changelog

    s = Settings()
    topic = changelog(s, USERS_TABLE)
    with LocalStack(env={"REELSTREAM_PARTITIONS": "1"}) as stack:
        stack.start_broker()
        first = stack.start_worker()
        wait_for(lambda: owned_partitions(first, s.topics.events) == {0}, 60, "the first worker's partition", [first.log])
        second = stack.start_worker()
        wait_for(lambda: total(second.metrics(), "reelstream_rebalances_total") >= 1
                 and total(first.metrics(), "reelstream_rebalances_total") >= 2, 60, "the second join", [second.log])  # fmt: skip

        def roles() -> tuple | None:
            """(owner, standby) once exactly one of them reports the partition: a worker reports a partition
            only once it knows its high watermark, so right after the rebalance neither may (a flake: the
            owner taken for the standby)."""
            a, b = owned_partitions(first, s.topics.events), owned_partitions(second, s.topics.events)
            return (first, second) if (a, b) == ({0}, set()) else (second, first) if (a, b) == (set(), {0}) else None

        owner, standby = wait_for(roles, 60, "one owner", [first.log, second.log])
        producer = make_producer(stack.bootstrap, **{"message.max.bytes": 2_000_000})
        produce(producer, topic, orjson.dumps({"events": []}), orjson.dumps("before"), partition=0)
        producer.flush(30)
        time.sleep(2)  # the standby reads it: its position is now at the end
        standby.proc.send_signal(signal.SIGSTOP)
        try:
            pad = "x" * 200_000
            for i in range(30):
                produce(producer, topic, orjson.dumps({"events": [], "pad": pad}), orjson.dumps(f"filler-{i}"), partition=0)
            producer.flush(30)
        finally:
            standby.proc.send_signal(signal.SIGCONT)
        c = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "local-store-test"})
        low, _high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.close()
        assert low > 1, "the broker kept what the standby had not read: nothing to detect"
        gap = 'reelstream_dlq_messages_total{reason="changelog_gap"}'
        wait_for(lambda: standby.metrics().get(gap, 0) > 0, 60, "the hole reported", [standby.log], standby.proc)
        assert owned_partitions(standby, s.topics.events) == set()  # still the standby: no rebalance happened
        assert standby.metrics()[gap] == low - 1  # offsets 1..low-1: the standby had read offset 0
        dead = [orjson.loads(r.value) for r in read_topic(stack.bootstrap, s.topics.dlq)]
        assert [(d["reason"], d["topic"], d["offset"]) for d in dead] == [("changelog_gap", topic, 1)]
        assert owner.metrics().get(gap, 0) == 0


# --- the write-behind, in process (a real Faust app and RocksDB store; a sink acknowledges on demand) -----------
class _LateSink(Sink):
    """An output that acknowledges only when told (as the broker at a flush)."""

    def __init__(self) -> None:
        super().__init__()
        self.unacked: list = []

    def emit(self, topic, key, value, timestamp=None, partition=None, on_delivery=None) -> None:
        self.sent.append((topic, key, value))
        if on_delivery is not None:
            self.unacked.append((topic, partition, on_delivery))

    def ack(self, n: int | None = None) -> None:
        n = len(self.unacked) if n is None else n
        for topic, partition, callback in self.unacked[:n]:
            self.acknowledge(topic, partition, callback)
        del self.unacked[:n]

    async def flush(self) -> None:
        self.ack()


def _users_table(tmp_path, sink):
    from models.recs.serving import load_recommender
    from models.text.base import load_comment_models
    from streams.app import create_app
    from streams.settings import Settings

    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path), partitions=2)
    app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation),
                     output=sink)  # fmt: skip
    app.finalize()
    return app.tables["users"]


def test_closing_the_store_releases_each_database_and_a_reopen_reads_what_was_written(tmp_path):
    """`RocksPartitions.close` (what a process that wrote a store calls before it exits) closes each open
    database even while something still holds it: RocksDB's lock file refuses a second open of a database
    that is still open, so reopening in this same process proves the first was closed, not just dropped."""
    from streams.transport.rocks_store import RocksPartitions

    rocks = RocksPartitions(_users_table(tmp_path, _LateSink()).data)
    rocks.write(0, [(b'"closed-k"', b"v1")], 5)
    rocks.write(1, [(b'"closed-j"', b"v2")], 6)
    held = rocks.store._db_for_partition(0)  # as an iterator or a column family handle would
    assert sorted(rocks.open_partitions()) == [0, 1]
    rocks.close()
    assert rocks.open_partitions() == []
    assert rocks.get(0, b'"closed-k"') == b"v1" and rocks.persisted_offset(1) == 6
    assert held is not rocks.store._db_for_partition(0)


def test_a_write_reaches_the_store_only_once_acknowledged_with_its_offset(tmp_path):
    import asyncio

    from streams.topics import partition_for

    sink = _LateSink()
    users = _users_table(tmp_path, sink)
    p = partition_for(b"u1", 2)
    users.put("u1", {"events": [["e1", "v1", "like", 1.0, 0.0, None]]}, p)
    assert users.get("u1")["events"][0][0] == "e1"  # reads see it at once
    assert users._rocks.get(p, b'"u1"') is None and users._rocks.persisted_offset(p) is None  # not stored yet

    users.store_acknowledged(dict(users._pending))  # a flush whose delivery report has not come: nothing stored
    assert users._rocks.get(p, b'"u1"') is None

    staged = dict(users._pending)
    users.put("u1", {"events": [["e1", "v1", "like", 1.0, 0.0, None], ["e2", "v2", "like", 2.0, 0.0, None]]}, p)
    sink.ack(1)  # only the first write acknowledged
    users.store_acknowledged(staged)
    assert orjson.loads(users._rocks.get(p, b'"u1"'))["events"][-1][0] == "e1"
    assert users._rocks.persisted_offset(p) == 0
    assert [r[0] for r in users.get("u1")["events"]] == ["e1", "e2"]  # the newer write is still the one read

    asyncio.run(users.flush())  # snapshot, acknowledge everything, store
    assert [r[0] for r in orjson.loads(users._rocks.get(p, b'"u1"'))["events"]] == ["e1", "e2"]
    assert users._rocks.persisted_offset(p) == 1 and not users._pending

    users.remove("u1", p)
    asyncio.run(users.flush())
    assert users._rocks.get(p, b'"u1"') is None and users.get("u1") is None
    assert users._rocks.persisted_offset(p) == 2


def _files_with(root: Path, marker: bytes) -> list[str]:
    """The files under `root` (RocksDB's SSTs, write-ahead logs, MANIFESTs...) whose raw bytes hold `marker`."""
    return sorted(f.name for f in root.rglob("*") if f.is_file() and marker in f.read_bytes())


def test_keys_deleted_from_the_store_leave_its_files_once_purged(tmp_path):
    """Erasure on disk: a delete this worker wrote and one it applied from the changelog (a standby) leave
    RocksDB's files (SSTs, write-ahead log, MANIFEST) at `purge_deleted`, not at some later compaction."""
    import asyncio
    from types import SimpleNamespace

    from faust.types import TP

    from streams.topics import partition_for

    sink = _LateSink()
    users = _users_table(tmp_path, sink)
    p = partition_for(b"erased-qx", 2)
    users.put("erased-qx", {"events": [["mark-qx1", "v1", "comment", 1.0, 0.0, None]]}, p)
    users.put("kept-qx", {"events": [["e2", "v1", "like", 1.0, 0.0, None]]}, partition_for(b"kept-qx", 2))
    asyncio.run(users.flush())
    q = partition_for(b"standby-qx", 2)
    tp = TP(users.changelog_topic_name, q)

    def applied(value: bytes | None, offset: int) -> SimpleNamespace:
        message = SimpleNamespace(topic=tp.topic, key=b'"standby-qx"', value=value, partition=q, offset=offset, tp=tp)
        return SimpleNamespace(message=message)

    users.apply_changelog_batch([applied(b'{"events": [["mark-qx2", "v1", "comment", 1.0, 0.0, null]]}', 7)])
    for partition in {p, q}:
        users._rocks.flush(partition)
    assert _files_with(tmp_path, b"erased-qx") and _files_with(tmp_path, b"standby-qx")  # in an SST: seen

    users.remove("erased-qx", p)
    asyncio.run(users.flush())
    users.apply_changelog_batch([applied(None, 8)])
    assert _files_with(tmp_path, b"erased-qx") and _files_with(tmp_path, b"standby-qx")  # deleted, still in files
    assert asyncio.run(users.purge_deleted()) == 2
    for marker in (b"erased-qx", b"standby-qx", b"mark-qx"):
        assert _files_with(tmp_path, marker) == [], marker
    assert users.get("erased-qx") is None and users.get("standby-qx") is None
    assert users.get("kept-qx")["events"][0][0] == "e2"
    assert asyncio.run(users.purge_deleted()) == 0  # nothing deleted since


def test_a_delete_the_last_run_never_purged_leaves_the_files_at_the_next_run_s_purge(tmp_path):
    """The list of keys to purge is in memory: a worker stopped (or killed) after a delete and before its purge
    loses it, but the tombstone in the files says what is owed, and the next run's purge finds it there."""
    import asyncio

    from streams.topics import partition_for

    users = _users_table(tmp_path, _LateSink())
    p = partition_for(b"erased-qy", 2)
    users.put("erased-qy", {"events": [["mark-qy", "v1", "comment", 1.0, 0.0, None]]}, p)
    asyncio.run(users.flush())
    users._rocks.flush(p)
    users.remove("erased-qy", p)
    asyncio.run(users.flush())
    users._rocks.flush(p)  # the tombstone in an SST, the value in another: no purge yet
    assert _files_with(tmp_path, b"erased-qy")
    for db in users.data._dbs.values():
        db.close()

    again = _users_table(tmp_path, _LateSink())  # the next run, on the same disk
    assert again.get("erased-qy") is None  # (opens its partition, as an assignment does)
    assert _files_with(tmp_path, b"erased-qy")
    assert asyncio.run(again.purge_deleted()) == 0  # it deleted nothing itself
    assert _files_with(tmp_path, b"erased-qy") == _files_with(tmp_path, b"mark-qy") == []


def test_a_recovery_that_starts_beyond_what_a_table_applied_dead_letters_the_skipped_offsets(tmp_path):
    """Faust's own `_build_offsets` decides where recovery starts (streams/transport/recovery_holes.py); what
    it skips past the last offset a table applied is reported, once; a partition this worker already held in
    a store without an offset is not (its state is in memory)."""
    import asyncio
    from collections import Counter

    from faust.types import TP

    from streams.settings import Settings
    from streams.transport.recovery_holes import HoleCheckingRecovery

    class Broker:  # the one thing recovery asks the consumer here: the earliest offset still on the broker
        async def earliest_offsets(self, *tps):
            return {tp: 10 for tp in tps}

    sink = Sink()
    users = _users_table(tmp_path, sink)
    recovery = users.app.tables.recovery
    assert isinstance(recovery, HoleCheckingRecovery)
    topic = users.changelog_topic_name
    behind, empty, ahead, held = (TP(topic, p) for p in range(4))
    for tp in (behind, empty, ahead, held):
        recovery.tp_to_table[tp] = users
    recovery._held = frozenset([held])
    offsets = Counter({behind: 3, empty: None, ahead: 12, held: 3})
    for _ in range(2):  # the same hole seen again at the next rebalance: reported once
        asyncio.run(recovery._build_offsets(Broker(), {behind, empty, ahead}, offsets, "standby"))
        asyncio.run(recovery._build_offsets(Broker(), {held}, offsets, "active"))
    assert dict(offsets) == {behind: 9, empty: 9, ahead: 12, held: 9}  # Faust's start: max(applied, earliest - 1)
    dead = sink.values(Settings().topics.dlq)
    assert sorted((d["reason"], d["partition"], d["offset"]) for d in dead) == [
        ("changelog_gap", 0, 4), ("changelog_gap", 1, 0)
    ]  # fmt: skip
    assert {d["partition"]: d["detail"].split(" (")[0] for d in dead} == {0: "offsets 4..9", 1: "offsets 0..9"}


def test_bench_state_replays_bench_pipeline_s_stream_on_the_stored_users_and_videos_it_is_given(tmp_path):
    """The baselines' traffic after the restart: the generated stream's user events, in order and otherwise
    unchanged, with each generated user and video one of the stored ones given (one to one), from `start_ts`."""
    from lab.bench import population
    from lab.generator import GeneratorConfig, generate
    from lab.recording import read_records
    from lab.state_bench import pipeline_traffic, user_id, video_id

    users, videos = [user_id(n) for n in range(5000, 5300)], [video_id(n) for n in range(900, 1300)]
    traffic = pipeline_traffic(tmp_path, 1000, users, videos, 1_800_000_000, seed=3)
    n_users, n_videos = population(1000)
    generate(GeneratorConfig(users=n_users, videos=n_videos, events=1000, seed=3, start_ts=1_800_000_000),
             tmp_path / "plain.jsonl")  # fmt: skip
    plain = [orjson.loads(r.value) for r in read_records(tmp_path / "plain.jsonl") if r.topic == "events"]
    mapped = [orjson.loads(r.value) for r in traffic]
    assert len(mapped) == len(plain) == 1000 and all(r.key == orjson.loads(r.value)["user_id"].encode() for r in traffic)
    user_of, video_of = {}, {}
    for p, m in zip(plain, mapped):
        assert {k: v for k, v in m.items() if k not in ("user_id", "video_id")} == {
            k: v for k, v in p.items() if k not in ("user_id", "video_id")
        }
        assert user_of.setdefault(p["user_id"], m["user_id"]) == m["user_id"]
        if "video_id" in p:
            assert video_of.setdefault(p["video_id"], m["video_id"]) == m["video_id"]
    assert set(user_of.values()) <= set(users) and len(set(user_of.values())) == len(user_of) > 100
    assert set(video_of.values()) <= set(videos) and len(set(video_of.values())) == len(video_of) > 100
    assert min(e["ts"] for e in mapped) >= 1_800_000_000
    with pytest.raises(ValueError, match="users"):
        pipeline_traffic(tmp_path, 1000, users[:10], videos, 1_800_000_000)


@pytest.mark.slow
def test_bench_state_restarts_a_worker_on_its_store_and_serves_stored_users_from_it():
    """`reelstream bench state` at a small size: after the kill -9 the restarted worker serves a user whose
    20 interactions were only ever in its local store (the changelog is empty), and restores every stored
    user's factor for its Gram sums; the item side's state of the uploads no fit covers is restored whole.
    With baselines: `bench pipeline` as usual and on the bench's own model (its worker serves that model's
    version), and the ratios to both."""
    from lab.state_bench import bench_state

    result = bench_state(users=3000, videos=2000, factors=16, events=1000, timeout_s=300,
                         baseline={"events": 2000, "latency_events": 200})  # fmt: skip
    print(result)
    assert result["probe_history_rows"] == 21  # 20 read from the store, and the probe event
    assert result["probe_model_version"] == "bench-state"  # served by the saved model's ALS, not popularity
    assert result["recovery_s"] > 0 and result["events_per_s_after_recovery"] > 0 and result["rss_mib"] > 0
    assert result["store"] == "rocksdb"
    # `bench pipeline`'s stream on stored users no other run touched: its sessions repeat users within a batch.
    mixed, per_user = result["pipeline_traffic"], result["one_event_per_user"]
    assert mixed["events"] == 2000 and mixed["users"] <= 200, mixed
    assert mixed["users"] <= mixed["recommendations_per_1k_events"] * mixed["events"] / 1000, mixed  # each served
    assert mixed["recommendations_per_1k_events"] < 1000, mixed
    # Then one event per user: every distinct user served at least once, and a user twice in a micro-batch only
    # once there.
    assert per_user["events"] == 1000 and per_user["users"] > mixed["users"], per_user
    for run in (mixed, per_user["first_touch"], per_user["same_users_again"]):
        # The event loop's CPU is part of the process's (1,000 events: some 100 ms, far above the 10 ms tick).
        assert 0 < run["worker_main_thread_cpu_ms_per_1k_events"] <= run["worker_cpu_ms_per_1k_events"], run
        assert run["item_side_lag"]["caught_up_s"] is not None, run
    for run in (per_user["first_touch"], per_user["same_users_again"]):
        assert run["events_per_s"] > 0 and per_user["users"] <= run["recommendations_per_1k_events"] <= 1000, run
    held = result["item_side_interactions"]
    assert held["before_kill"] > 1000 and held["after_restart"] == held["before_kill"], held
    usual, same = result["baselines"]["pipeline"], result["baselines"]["pipeline_same_model"]
    assert 'recommender="als-streaming"' in usual["build"] and 'recommender="bench-state"' in same["build"]
    for name, base in result["baselines"].items():
        assert base["events_per_s"] > 0 and base["offset_gaps"] == 0, name
        assert 0 < base["worker_main_thread_cpu_ms_per_1k_events"] <= base["worker_cpu_ms_per_1k_events"], name
        assert 0 < base["recommendations_per_1k_events"] < 1000, name  # its users act many times a batch
        ratio = result["events_per_s_after_recovery"] / base["events_per_s"]
        assert result["events_per_s_ratio"][name] == round(ratio, 3)
        cold = per_user["first_touch"]
        assert cold["events_per_s_ratio"][name] == round(cold["events_per_s"] / base["events_per_s"], 3), name
