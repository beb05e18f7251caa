"""The agents' logic without a broker: DLQ, dedup, erasure, batching, comments, failure safety."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from models.recs.serving import load_recommender
from monitoring import metrics
from streams.pipeline import Message, Pipeline
from tests.sinks import Sink


def msg(value, offset=0, key=b"u1", ts=100.0):
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return Message("events", 0, offset, ts, key, raw)


def ev(event_id, user="u1", video="v1", type_="like", **extra):
    return {"schema_version": 1, "event_id": event_id, "type": type_, "user_id": user, "video_id": video, "ts": 1.0, **extra}


@pytest.fixture
def world(settings):
    sink = Sink()
    users, catalog = {}, {}
    pipe = Pipeline(settings, users, catalog, load_recommender(settings.recs, settings.index), sink.emit, clock=lambda: 101.0)
    return pipe, users, catalog, sink


def ids(users, user):
    return [row[0] for row in users[user]["events"]]


def test_invalid_messages_go_to_the_dlq_with_reason_and_original_bytes(world):
    pipe, users, _, sink = world
    before = metrics.DLQ.labels("bad_json")._value.get()
    pipe.process_events([msg(b"{nope", offset=7), msg(ev("e1"))])
    [dead] = sink.values("events.dlq")
    assert dead["reason"] == "bad_json" and dead["offset"] == 7 and base64.b64decode(dead["raw"]) == b"{nope"
    assert metrics.DLQ.labels("bad_json")._value.get() == before + 1
    assert ids(users, "u1") == ["e1"]


def test_duplicates_are_absorbed_across_and_within_batches(world):
    pipe, users, _, sink = world
    pipe.process_events([msg(ev("e1")), msg(ev("e1")), msg(ev("e2", video="v2"))])
    pipe.process_events([msg(ev("e2", video="v2"))])
    assert ids(users, "u1") == ["e1", "e2"]
    assert len(sink.values("recommendations")) == 2  # one per user per batch; a redelivery is re-served


def test_one_recommendation_per_user_per_batch_with_the_last_source_event(world):
    pipe, users, _, sink = world
    pipe.process_events([msg(ev("a1", user="a"), key=b"a"), msg(ev("b1", user="b"), key=b"b"),
                         msg(ev("a2", user="a", video="v2"), key=b"a")])  # fmt: skip
    recs = {r["user_id"]: r for r in sink.values("recommendations")}
    assert set(recs) == {"a", "b"} and recs["a"]["source_event_id"] == "a2"
    assert recs["a"]["model_version"]


def test_refresh_serves_stored_users_again_with_the_new_version(world, settings):
    pipe, users, _, sink = world
    pipe.process_events([msg(ev("a1", user="a", video="v1"), key=b"a"), msg(ev("b1", user="b", video="v2"), key=b"b")])
    rng = np.random.default_rng(0)
    pipe.recommender.upsert_items(["v1", "v2", "v3", "v4"], rng.random((4, settings.recs.factors), dtype=np.float32))
    pipe.recommender.use_model("als-new", np.eye(settings.recs.factors))
    sink.sent.clear()
    assert pipe.refresh({"a": 3, "b": 3, "nobody": 3}) == 2  # a user without history is not served
    recs = {r["user_id"]: r for r in sink.values("recommendations")}
    assert set(recs) == {"a", "b"} and recs["a"]["source_event_id"] == "a1"  # the latest event stays the source
    assert all(r["model_version"] == "als-new" and r["items"] for r in recs.values())
    assert "v1" not in {i["video_id"] for i in recs["a"]["items"]}  # still never a seen video
    partials = pipe.recommender.partials()  # their factors moved to the partition they were served for
    assert np.abs(partials[3]).max() > 0 and np.abs(partials.get(0, np.zeros(1))).max() < 1e-9


def test_seen_and_unavailable_videos_are_never_recommended(world, settings):
    pipe, users, catalog, sink = world
    for i in range(30):  # popularity for v0..v29 from other users
        pipe.process_events([msg(ev(f"o{i}", user=f"o{i}", video=f"v{i % 15}"), key=f"o{i}".encode())])
    catalog["v3"] = "removed"
    catalog["v4"] = "blocked"
    sink.sent.clear()
    pipe.process_events([msg(ev("me1", user="me", video="v0"), key=b"me")])
    [rec] = sink.values("recommendations")
    got = {i["video_id"] for i in rec["items"]}
    assert got and not got & {"v0", "v3", "v4"} and len(got) <= settings.recs.top_k
    # A like taken back leaves the video with no confidence, but it was seen: still never recommended.
    sink.sent.clear()
    pipe.process_events([msg(ev("me2", user="me", video="v1"), key=b"me"),
                         msg(ev("me3", user="me", video="v1", type_="unlike"), key=b"me")])  # fmt: skip
    [rec] = sink.values("recommendations")
    assert not {i["video_id"] for i in rec["items"]} & {"v0", "v1", "v3", "v4"}


def test_user_delete_erases_state_and_pending_output(world):
    pipe, users, _, sink = world
    pipe.process_events([msg(ev("e1")), msg({**ev("d1", type_="user_delete")})])
    assert "u1" not in users
    assert sink.values("recommendations") == [None]  # only the tombstone, no output for the erased user
    pipe.process_events([msg(ev("e1"))])  # an event after erasure starts a new history
    assert ids(users, "u1") == ["e1"]


def test_comments_are_forwarded_and_scored_once_state_is_there(world):
    pipe, users, _, sink = world
    comment = ev("c1", type_="comment", text="what a lovely video")
    pipe.process_events([msg(comment)])
    [(topic, key, raw)] = [s for s in sink.sent if s[0] == "comments"]
    pending = pipe.comments_batch([Message("comments", 0, 0, 100.0, key, raw)])
    assert len(pending) == 1

    from models.text.base import CommentScore

    res = CommentScore(scores={c: 0.0 for c in ("toxic", "offensive", "hate", "sexism", "spam")},
                       sentiment={"negative": 0.1, "neutral": 0.2, "positive": 0.7}, lang="en", action="allow",
                       reasons=[], abstained=["sexism"])  # fmt: skip
    pipe.apply_comment_scores(pending, [res], "test-model")
    [flag] = sink.values("moderation-flags")
    assert flag["event_id"] == "c1" and flag["model_version"] == "test-model" and flag["abstained"] == ["sexism"]
    assert users["u1"]["events"][0][5] == [0.1, 0.2, 0.7]
    # a redelivered comment whose sentiment is known is not forwarded again
    sink.sent.clear()
    pipe.process_events([msg(comment)])
    assert not [s for s in sink.sent if s[0] == "comments"]


def test_comment_of_an_erased_user_is_not_scored(world):
    pipe, users, _, sink = world
    pipe.process_events([msg(ev("c1", type_="comment", text="hi"))])
    [(_, key, raw)] = [s for s in sink.sent if s[0] == "comments"]
    pipe.process_events([msg(ev("d", type_="user_delete"))])
    assert pipe.comments_batch([Message("comments", 0, 0, 100.0, key, raw)]) == []


def test_a_failing_batch_is_retried_alone_and_never_lost(world):
    pipe, users, _, sink = world
    real = pipe.recommender.recommend_many

    def flaky(requests, k, exclude=()):
        if any(r.user_id == "bad" for r in requests):
            raise RuntimeError("model bug")
        return real(requests, k, exclude)

    pipe.recommender.recommend_many = flaky
    batch = [msg(ev("g1", user="good"), key=b"good"), msg(ev("b1", user="bad"), key=b"bad", offset=1)]
    asyncio.run(pipe.run_batch(pipe.process_events, batch))
    assert ids(users, "good") == ["g1"]
    [dead] = sink.values("events.dlq")
    assert dead["reason"] == "processing_error" and "model bug" in dead["detail"] and dead["offset"] == 1


def test_a_batch_failing_before_its_writes_loses_no_event_on_retry(settings):
    """The table hands out its stored objects (as Faust's memory store does): a failed attempt must not
    leave rows in them that the retry would then take for duplicates and never write."""

    class Table(dict):
        def __init__(self) -> None:
            super().__init__()
            self.written: list[str] = []

        def __setitem__(self, key, value) -> None:
            self.written.append(key)
            super().__setitem__(key, value)

    users, sink, failed = Table(), Sink(), []

    def emit(topic, key, value, timestamp=None, partition=None):
        if topic == "comments" and not failed:
            failed.append(True)
            raise RuntimeError("producer queue full")
        sink.emit(topic, key, value, timestamp, partition)

    users["u1"] = {"events": [["e0", "v0", "like", 1.0, 0.0, None]]}
    users.written.clear()
    pipe = Pipeline(settings, users, {}, load_recommender(settings.recs, settings.index), emit, clock=lambda: 101.0)
    batch = [msg(ev("e1", video="v1")), msg(ev("c1", user="u2", type_="comment", text="hi"), key=b"u2", offset=1)]
    asyncio.run(pipe.run_batch(pipe.process_events, batch))
    assert failed and "u1" in users.written
    assert ids(users, "u1") == ["e0", "e1"] and ids(users, "u2") == ["c1"]


def test_history_encoder_gives_exactly_the_full_encoding() -> None:
    """Appends are spliced onto the previous bytes; replacements, truncations, removals, other record shapes
    and evicted keys are encoded in full; every result equals orjson.dumps of the record."""
    import random

    import orjson

    from streams.tables import HistoryEncoder

    rng = random.Random(7)
    enc = HistoryEncoder(max_keys=3)
    histories: dict[str, list] = {}
    for n in range(600):
        key = f"u{rng.randrange(5)}"
        rows = list(histories.get(key, []))  # the worker copies the stored list, then changes the copy
        op = rng.random()
        if op < 0.7:
            new = range(rng.randint(1, 3))
            rows += [[f"e{n}-{i}", f"v{rng.randrange(9)}", "watch", 1e9 + n, 0.5, None] for i in new]
        elif op < 0.8 and rows:
            i = rng.randrange(len(rows))
            rows[i] = [*rows[i][:5], [0.1, 0.2, 0.7]]  # a comment scored: a new row
        elif op < 0.9:
            rows = rows[-rng.randint(0, 4):]
        elif op < 0.95:
            enc.forget(key)
        histories[key] = rows
        value = {"events": rows} if op < 0.97 else {"events": rows, "other": 1}
        assert enc.encode(key, value) == orjson.dumps(value)
    assert enc.spliced > 150  # the splice path ran, not only full encodings


def test_a_new_upload_is_shown_in_the_exploration_slot_with_its_reason(world, settings):
    pipe, _, _, sink = world
    pipe.process_events([msg(ev("e1"))])
    pipe.recommender.add_video("fresh")  # what the worker's catalog calls for every upload it applies
    sink.sent.clear()
    pipe.process_events([msg(ev("e2", video="v2"))])
    [rec] = sink.values("recommendations")
    assert rec["items"][-1] == {"video_id": "fresh", "score": 0.0, "reason": "explore", "because": []}
    assert len(rec["items"]) <= settings.recs.top_k


def test_an_upload_reaches_the_recommender_with_its_time(settings):
    """For the freshness prior (and the exploration pool): the owner of the videos partition tells its
    recommender at once; other workers learn it from the catalog's changelog records."""
    s = settings.model_copy(update={"recs": settings.recs.model_copy(update={"freshness": 1.0})})
    pipe = Pipeline(s, {}, {}, load_recommender(s.recs, s.index), Sink().emit)
    pipe.process_videos([Message("videos", 0, 0, 100.0, b"v9", b'{"video_id": "v9", "type": "upload", "ts": 42.5}')])
    assert pipe.recommender._uploaded == {"v9": 42.5} and list(pipe.recommender.exploration.pool()) == ["v9"]


@pytest.mark.parametrize("item_factors", ["packed", "json"])
def test_item_messages_carry_the_served_factor_exactly_in_either_format(settings, item_factors):
    """What the events side writes to interactions-by-video, the item side reads back as the factor the user
    was served with (bit for bit): packed float32 by default, JSON numbers while older workers still run."""
    from contracts.models import parse_item_messages

    settings = settings.model_copy(update={"item_factors": item_factors})
    sink = Sink()
    rec = load_recommender(settings.recs, settings.index)
    pipe = Pipeline(settings, {}, {}, rec, sink.emit, clock=lambda: 101.0)
    pipe.process_events([msg(ev("e1")), msg(ev("e2", video="v2"))])
    raw = [value for topic, _, value in sink.sent if topic == settings.topics.interactions_by_video]
    items = [item for value in raw for item in parse_item_messages(value, settings.recs.factors, settings.recs.max_vector_norm)]
    assert sorted(v for v, *_ in items) == ["v1", "v2"]
    served = rec.user_factors["u1"][1]
    for _, user, factor, _ in items:
        assert user == "u1" and np.asarray(factor, dtype=np.float32).tobytes() == served.tobytes()
    factors = [item[2] for value in raw for item in json.loads(value)]
    assert all(isinstance(f, str) if item_factors == "packed" else isinstance(f, list) for f in factors)
