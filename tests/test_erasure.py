"""Erasure against its written contract (streams/topics.py `erasure_contract`): after `user_delete`, every
topic the project writes, every local store and every file of the worker is read back, and what still links
a record to the erased user is only where the contract says it may be, until its retention: in the view a
broker keeps once that retention has passed since the erasure, nothing does."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from lab.local import wait_for

USER, KEPT = "gone-zq", "kept-c"
MARKER = "zqxj-marker"  # only in the erased user's comment texts


def _event(event_id: str, user: str, kind: str, **extra) -> bytes:
    return orjson.dumps({"schema_version": 1, "event_id": event_id, "type": kind, "user_id": user, "video_id": "vid-1",
                         "ts": 1.8e9, **extra})  # fmt: skip


def _links(*blobs: bytes | None) -> bool:
    return any(b is not None and (USER.encode() in b or MARKER.encode() in b) for b in blobs)


def _local_stores(data_dir: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every key and value in the worker's RocksDB databases, read through RocksDB (what a restarted worker
    would read). Their files may still hold a deleted key, and a value flushed before its delete, until
    RocksDB compacts them, as a compacted topic holds a tombstone (README "User data and erasure")."""
    from rocksdict import AccessType, Options, Rdict

    out: dict[str, list[tuple[bytes, bytes]]] = {}
    for current in data_dir.rglob("CURRENT"):
        db = Rdict(str(current.parent), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            out[str(current.parent.relative_to(data_dir))] = list(db.items())
        finally:
            db.close()
    return out


def _files_linking(data_dir: Path) -> list[str]:
    """The worker's files (RocksDB's SSTs, write-ahead logs, MANIFESTs...) whose raw bytes hold the erased user's
    id or a text of theirs."""
    return sorted(str(f.relative_to(data_dir)) for f in data_dir.rglob("*") if f.is_file() and _links(f.read_bytes()))


@pytest.mark.integration
def test_after_user_delete_nothing_links_the_user_outside_what_the_contract_keeps_until_retention():
    from lab.chaos import last_values, uncommitted
    from lab.local import LocalStack
    from lab.recording import read_topic
    from streams.review import decision_record
    from streams.settings import Settings
    from streams.topics import erasure_contract, topic_config

    s = Settings()
    t = s.topics
    contract = erasure_contract(s)
    with LocalStack() as stack:
        stack.env["REELSTREAM_STORE_PURGE_INTERVAL_S"] = "1"
        stack.start_broker()
        worker = stack.start_worker()
        send = stack.send

        send(t.videos, orjson.dumps({"schema_version": 1, "video_id": "vid-1", "type": "upload", "ts": 1.0}), "vid-1")
        for user in (USER, KEPT):
            for kind in ("watch", "like", "share"):
                extra = {"watch_ms": 9000, "duration_ms": 10000} if kind == "watch" else {}
                send(t.events, _event(f"{user}-{kind}", user, kind, **extra), user)
        texts = {  # one allowed, one sent to review, one blocked, appealed, and the block upheld
            "c-ok": f"lovely video {MARKER}",
            "c-review": f"you are a complete idiot and everyone hates you {MARKER}",
            "c-block": f"check out my channel for free money http://spam.example {MARKER}",
        }
        for eid, text in texts.items():
            send(t.events, _event(eid, USER, "comment", text=text, lang="en"), USER)
        send(t.events, _event("k-comment", KEPT, "comment", text="great stuff", lang="en"), KEPT)
        send(t.events, _event("bad-1", USER, "teleport"), USER)  # invalid: dead-lettered with the user in it

        def flagged() -> set[str]:
            return {orjson.loads(r.value)["event_id"] for r in read_topic(stack.bootstrap, t.moderation_flags)}

        wait_for(lambda: {*texts, "k-comment"} <= flagged(), 90, "every comment scored", [worker.log], worker.proc)
        send(t.events, _event("appeal-1", USER, "appeal", target_event_id="c-block", text=f"my own channel {MARKER}"), USER)
        item = wait_for(lambda: last_values(stack.bootstrap, t.review_queue).get(b"appeal-1"), 60, "the appeal queued",
                        [worker.log], worker.proc)  # fmt: skip
        # a reviewer upholds the block: a decision keyed by the user, and an appeal outcome naming them
        send(t.review_decisions, decision_record(orjson.loads(item), "remove", "spam", "", "ana", 1.8e9 + 5), USER)
        wait_for(lambda: any(True for _ in read_topic(stack.bootstrap, t.appeal_outcomes)), 60, "the appeal decided",
                 [worker.log], worker.proc)  # fmt: skip
        send(t.events, _event("bye", USER, "user_delete"), USER)
        send(t.events, _event("k-after", KEPT, "like"), KEPT)
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "all input committed", [worker.log], worker.proc)
        wait_for(lambda: not any(_links(k, v) for k, v in last_values(stack.bootstrap, t.review_queue).items()), 60,
                 "the user's review items tombstoned", [worker.log], worker.proc)  # fmt: skip
        # Everything of the user's events has been written: a broker applying the retention at this moment plus
        # `retention.ms` keeps only what comes after. The worker goes on (another user comments, sends an
        # invalid event, interacts), and nothing it writes from here may link the erased user.
        time.sleep(0.05)
        erased_at_ms = int(time.time() * 1000)
        time.sleep(0.05)
        send(t.events, _event("k-late", KEPT, "comment", text="nice edit", lang="en"), KEPT)
        send(t.events, _event("k-bad", KEPT, "teleport"), KEPT)
        send(t.events, _event("k-late-like", KEPT, "like"), KEPT)
        wait_for(lambda: "k-late" in flagged() and uncommitted(stack.bootstrap, s) == 0, 90, "the late events processed",
                 [worker.log], worker.proc)  # fmt: skip
        # the deletes leave RocksDB's files too (OutputTable.purge_deleted): before, its write-ahead log, SSTs
        # and MANIFEST kept the user's id and texts until RocksDB compacted them
        wait_for(lambda: not _files_linking(worker.data_dir), 60, "the erased user out of the store files",
                 [worker.log], worker.proc)  # fmt: skip
        assert worker.stop() == 0  # stores closed cleanly, so they can be opened here
        assert not _files_linking(worker.data_dir)
        found: dict[str, str] = {}
        kept_later: dict[str, int] = {}  # per retention topic, the other user's records written after the erasure
        for topic, erasure in contract.items():
            records = list(read_topic(stack.bootstrap, topic))
            if erasure.mechanism == "tombstone":
                # compaction keeps the last value per key, and drops tombstones after delete.retention.ms
                linked = [k for k, v in last_values(stack.bootstrap, topic).items() if v is not None and _links(k, v)]
                assert topic_config(s, topic)["cleanup.policy"].startswith("compact")
            else:
                linked = [r.key for r in records if _links(r.key, r.value)]
            if linked:
                found[topic] = erasure.mechanism
            if erasure.mechanism == "retention":
                assert topic_config(s, topic) == {"cleanup.policy": "delete",
                                                  "retention.ms": str(s.user_data_retention_s * 1000)}  # fmt: skip
                later = [r for r in records if (r.timestamp_ms or 0) >= erased_at_ms]
                assert not [r.key for r in later if _links(r.key, r.value)], f"{topic} links the user after the erasure"
                kept_later[topic] = sum(1 for r in later if KEPT.encode() in (r.key or b"") + (r.value or b""))
        stores = _local_stores(worker.data_dir)
    assert any(KEPT.encode() in k for items in stores.values() for k, _ in items), "the stores were not read"
    in_stores = {name for name, items in stores.items() if any(_links(k, v) for k, v in items)}
    assert not in_stores, f"the erased user is still in local stores {sorted(in_stores)}"
    # only topics whose contract is retention (or the producers' own) may still hold the user
    assert {topic for topic, mechanism in found.items() if mechanism not in ("retention", "producers")} == set(), found
    # and the check does see the user where the contract keeps it until retention (and in the producers' events)
    assert set(found) == {t.events, t.comments, t.moderation_flags, t.dlq, t.interactions_by_video,
                          t.review_decisions, t.appeal_outcomes}, found  # fmt: skip
    # once their retention has passed since the erasure, those topics hold nothing of the user; the view is not
    # empty by construction: the other user's later records are in it
    assert all(kept_later[topic] for topic in (t.comments, t.moderation_flags, t.dlq, t.interactions_by_video)), kept_later
