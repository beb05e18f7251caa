"""Internal topics are input too: hostile records on item-vectors, user-gram, models, interactions-by-video
and the tables' own changelogs (users, item-state, reviews, catalog) are dead-lettered with a reason and
never applied (streams.tables.ValidatedChangelog, ItemSide.apply).

Every record below is invalid by construction (its maker says which reason it must get); Hypothesis drives
them through a real app's replicas and item side in process, and a seeded sample of them goes through a real
worker on the embedded broker, where each must land in the DLQ once with its reason while the index stays as
it was."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contracts.models import pack_factor
from streams.settings import Settings
from streams.topics import changelog, partition_for

S = Settings()
F = S.recs.factors
P = S.partitions
GOOD = [0.01] * F


def _gram(factors: int = F) -> list[list[float]]:
    g = np.eye(factors) * 2.0
    g[0, 1] = g[1, 0] = 0.5
    return g.tolist()


def _flat(g) -> list[float]:
    return [x for row in g for x in row]


def _bad_entry(value) -> list:
    v = list(GOOD)
    v[F // 2] = value
    return v


def _asymmetric() -> list[float]:
    g = _gram()
    g[0][1] += 1.0
    return _flat(g)


def _negative_diagonal() -> list[float]:
    g = _gram()
    g[2][2] = -1.0
    return _flat(g)


BAD_JSON = [b"\xff\xfe", b"{", b"NaN", b"[1, 2", b"\x00"]
# (key, value bytes) of each topic; every one of them invalid
VECTOR_VALUES = [
    [0.1] * (F - 1), [0.1] * (F + 1), [], _bad_entry("x"), _bad_entry(True), _bad_entry(None), _bad_entry([1.0]),
    [1e30] * F, _bad_entry(1e300), {"vector": [0.1] * 3}, {"model_version": "x"}, {"vector": "abc"}, 1, "v", {},
]  # fmt: skip
GRAM_VALUES = [_flat(_gram())[:-1], _asymmetric(), _negative_diagonal(), [0.0] * (F * F - 1) + ["x"], {}, "g", [[1.0]]]
MODEL_VALUES = [
    {"schema_version": 1, "model_version": "m", "factors": F, "gram": _asymmetric()},
    {"schema_version": 1, "model_version": "m", "factors": F + 1, "gram": _flat(_gram(F + 1))},
    {"schema_version": 2, "model_version": "m", "factors": F, "gram": _flat(_gram())},
    {"schema_version": 1, "model_version": "", "factors": F, "gram": _flat(_gram())},
    {"schema_version": 1, "model_version": "m", "factors": F, "gram": [True] * (F * F)},
    [1, 2], "als",
]  # fmt: skip


def _video_of(partition: int, n: int = 0) -> str:
    return [f"hv{i}" for i in range(10_000) if partition_for(f"hv{i}".encode(), P) == partition][n]


def _item(video: str, factor=GOOD, confidence=1.0, user: str = "hu1") -> list:
    return [video, user, factor, confidence]


def item_messages(partition: int) -> list[bytes]:
    """Bad interactions-by-video messages for `partition` (the last holds one good item before a bad one)."""
    v = _video_of(partition)
    bad_items = [
        [v, "hu1", GOOD], [v, "hu1", GOOD, 1.0, "extra"], _item(v, [0.1] * (F - 1)), _item(v, [1e30] * F),
        _item(v, confidence="1"), _item(v, confidence=True), _item(v, confidence=None),
        _item(v, user=""), _item(""), [None, "hu1", GOOD, 1.0], _item(_video_of((partition + 1) % P)),
        # packed factors (contracts.models.pack_factor): short, long, not finite, too long a vector, not base64
        _item(v, pack_factor([0.1] * (F - 1))), _item(v, pack_factor([0.1] * (F + 1))),
        _item(v, pack_factor([float("nan")] * F)), _item(v, pack_factor([1e30] * F)), _item(v, "!!"), _item(v, 7),
    ]  # fmt: skip
    out = [orjson.dumps([item]) for item in bad_items]
    out += [orjson.dumps({"v": 1}), orjson.dumps("x"), *BAD_JSON, orjson.dumps([_item(v), bad_items[2]])]
    return out


def _review_item(user: str = "hu1", item_id: str = "i1", **change) -> dict:
    return {"schema_version": 1, "item_id": item_id, "kind": "review", "event_id": item_id, "user_id": user,
            "video_id": "v1", "text": "t", "lang": "en", "scores": {"toxic": 0.6}, "sentiment": {"negative": 1.0},
            "reasons": ["toxic>=0.5"], "model_action": "review", "model_version": "m", "queued_at": 1.0, **change}  # fmt: skip


def _row(**change) -> list:
    row = {"event_id": "e1", "video_id": "v1", "kind": "like", "ts": 1.0, "ratio": 0.0, "sentiment": None, **change}
    return list(row.values())


USER_VALUES = [
    {"events": "x"}, {"events": [_row(kind="teleport")]}, {"events": [_row(ts=-1.0)]}, {"events": [_row(ratio=2.0)]},
    {"events": [_row(sentiment=[0.5, 0.5])]}, {"events": [_row(event_id="")]}, {"events": [_row()[:5]]},
    {"events": [_row(video_id=7)]}, {"events": [], "more": 1}, {"rows": []}, [1], "x", 3,
]  # fmt: skip
REVIEW_VALUES = [
    {"pending": {"i1": {"item_id": "i1"}}}, {"pending": {"i1": _review_item(user="someone-else")}},
    {"pending": {"i2": _review_item()}}, {"pending": {"i1": _review_item(model_action="delete")}},
    {"blocked": {"e1": {"video_id": "v1"}}}, {"other": {}}, {"pending": []}, ["x"], "x",
]  # fmt: skip
STATE_VALUES = [["m", "!!", {"v1": 1.0}], ["m", None, {}], ["m", None, {"v1": "x"}], ["m", None, {"v1": 0}], {"v1": 1.0}, "x"]
CATALOG_VALUES = ["deleted", "", 1, {"status": "active"}, ["active"]]


def hostile() -> list[tuple[str, int, bytes | None, bytes | None, str]]:
    """(topic, partition, key, value, reason) of every hostile record (partition -1: the key's)."""
    t = S.topics
    out = []
    for value in VECTOR_VALUES:
        out.append((t.item_vectors, -1, orjson.dumps("hostile-v"), orjson.dumps(value), "invalid_item_vector"))
    out += [(t.item_vectors, -1, orjson.dumps("hostile-v"), raw, "invalid_item_vector") for raw in BAD_JSON]
    for key in (orjson.dumps(7), orjson.dumps(["v"]), orjson.dumps(""), b"\xff", None):
        out.append((t.item_vectors, 0, key, orjson.dumps(GOOD), "invalid_item_vector"))
    for value in GRAM_VALUES:
        out.append((t.user_gram, 0, orjson.dumps(0), orjson.dumps(value), "invalid_gram"))
    for key in (orjson.dumps(P), orjson.dumps(-1), orjson.dumps("0"), orjson.dumps(0.0)):
        out.append((t.user_gram, 0, key, orjson.dumps(_flat(_gram())), "invalid_gram"))
    for value in MODEL_VALUES:
        out.append((t.models, 0, orjson.dumps("als"), orjson.dumps(value), "invalid_model_record"))
    good_model = {"schema_version": 1, "model_version": "m", "factors": F, "gram": _flat(_gram())}
    out.append((t.models, 0, orjson.dumps("other"), orjson.dumps(good_model), "invalid_model_record"))
    for partition in range(P):
        out += [(t.interactions_by_video, partition, None, raw, "invalid_item_message") for raw in item_messages(partition)]
    users, state, reviews, catalog = (changelog(S, name) for name in ("users", "item-state", "reviews", "catalog"))
    for value in [*map(orjson.dumps, USER_VALUES), *BAD_JSON]:
        out.append((users, -1, orjson.dumps("hu1"), value, "invalid_user_record"))
    for key in (orjson.dumps(7), orjson.dumps(""), b"\xff", None):
        out.append((users, 0, key, orjson.dumps({"events": [_row()]}), "invalid_user_record"))
    for value in [*map(orjson.dumps, REVIEW_VALUES), *BAD_JSON]:
        out.append((reviews, -1, orjson.dumps("hu1"), value, "invalid_review_record"))
    out.append((reviews, 0, orjson.dumps(["hu1"]), orjson.dumps({"pending": {}}), "invalid_review_record"))
    for value in [*map(orjson.dumps, STATE_VALUES), *BAD_JSON]:
        out.append((state, 1, orjson.dumps('[1,"hu1"]'), value, "invalid_item_state"))
    for key in (orjson.dumps(f'[{P},"hu1"]'), orjson.dumps("hu1"), orjson.dumps([1, "hu1"])):
        out.append((state, 1, key, orjson.dumps(["m", None, {"v1": 1.0}]), "invalid_item_state"))
    for value in [*map(orjson.dumps, CATALOG_VALUES), *BAD_JSON]:
        out.append((catalog, 0, orjson.dumps("hostile-video"), value, "invalid_catalog_record"))
    out.append((catalog, 0, orjson.dumps(5), orjson.dumps("active"), "invalid_catalog_record"))
    return out


HOSTILE = hostile()


def _event(topic: str, partition: int, key: bytes | None, value: bytes | None, offset: int = 0):
    from faust.types import TP

    if partition < 0:
        partition = partition_for(key, P)
    message = SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=0.0, key=key, value=value,
                              tp=TP(topic, partition))  # fmt: skip
    return SimpleNamespace(message=message, key=_decoded(key), value=_decoded(value))


def _decoded(raw: bytes | None):
    try:
        return None if raw is None else orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from models.recs.serving import load_recommender
    from models.text.base import load_comment_models
    from streams.app import create_app
    from tests.sinks import Sink

    settings = Settings(bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path_factory.mktemp("internal")))
    sink = Sink()
    app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation),
                     output=sink)  # fmt: skip
    app.finalize()
    return app, sink


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_no_hostile_record_reaches_the_model_and_each_is_dead_lettered_with_its_reason(world, records, rnd):
    from streams.pipeline import Message

    app, sink = world
    applied: list = []
    replicas = {app.tables[name].changelog_topic_name: app.tables[name] for name in ("item-vectors", "user-gram", "models")}
    for table in replicas.values():
        table.on_batch = applied.append
    stores = {app.tables[name].changelog_topic_name: app.tables[name] for name in ("users", "item-state", "reviews")}
    catalog = app.tables["catalog"]
    replicas.update(stores)
    replicas[catalog.changelog_topic_name] = catalog
    side = app.item_side
    before = {p: (dict(tr.video_users), dict(tr.user_factors)) for p, tr in side.trainers.items()}

    def stored() -> dict:
        return {topic: {p: list(t._rocks.items(p)) for p in range(P)} for topic, t in stores.items() if t.persistent}

    stored_before, catalog_before = stored(), (dict(catalog.data), set(catalog.inactive))

    def send_all() -> None:
        sink.sent.clear()
        for n, (topic, partition, key, value, _) in enumerate(records):
            if topic == S.topics.interactions_by_video:
                side.apply([Message(topic, partition, n, 0.0, key, value)])
            else:
                replicas[topic].apply_changelog_batch([_event(topic, partition, key, value, n)])

    send_all()
    assert applied == []
    assert stored() == stored_before and len(stored_before) == 3 and (dict(catalog.data), set(catalog.inactive)) == catalog_before
    assert {p: (dict(tr.video_users), dict(tr.user_factors)) for p, tr in side.trainers.items() if tr.video_users} == {
        p: v for p, v in before.items() if v[0]
    }
    dead = [orjson.loads(v) for t, _, v in sink.sent if t == S.topics.dlq]
    assert [(d["reason"], d["topic"]) for d in dead] == [(reason, topic) for topic, _, _, _, reason in records]
    assert all(d["detail"] for d in dead)
    rnd.shuffle(records)  # order does not matter: the same again, shuffled, is rejected the same way
    send_all()
    assert len([1 for t, _, _ in sink.sent if t == S.topics.dlq]) == len(records) and applied == []


def test_valid_records_of_the_same_topics_are_applied(world):
    """The makers' good counterparts pass: the checks reject what is bad, not everything."""
    from streams.pipeline import Message

    app, _ = world
    applied: list = []
    vectors = app.tables["item-vectors"]
    vectors.on_batch = applied.append
    vectors.apply_changelog_batch([_event(S.topics.item_vectors, 0, orjson.dumps("good-v"), orjson.dumps(GOOD))])
    assert applied == [{"good-v": GOOD}]
    grams = app.tables["user-gram"]
    grams.on_batch = applied.append
    grams.apply_changelog_batch([_event(S.topics.user_gram, 0, orjson.dumps(0), orjson.dumps(_flat(_gram())))])
    assert applied[-1] == {0: _flat(_gram())}
    v = _video_of(1)
    app.item_side.apply([Message(S.topics.interactions_by_video, 1, 0, 0.0, None, orjson.dumps([_item(v, user="ok")]))])
    assert app.item_side.trainers[1].video_users[v] == {"ok": 1.0}
    packed = [_item(v, pack_factor([0.02] * F), 2.0, user="packed")]
    app.item_side.apply([Message(S.topics.interactions_by_video, 1, 1, 0.0, None, orjson.dumps(packed))])
    assert app.item_side.trainers[1].video_users[v] == {"ok": 1.0, "packed": 2.0}
    assert app.item_side.trainers[1].user_factors["packed"].tobytes() == np.full(F, 0.02, np.float32).tobytes()
    good = {  # table -> (key, value) the worker itself writes
        "users": ("hu-good", {"events": [_row(), _row(event_id="e2", kind="comment", sentiment=[0.1, 0.2, 0.7])]}),
        "reviews": ("hu-good", {"pending": {"i1": _review_item("hu-good")}, "blocked": {}}),
        "item-state": ('[1,"hu-good"]', ["m", None, {v: 1.0}]),
        "catalog": ("good-video", "removed"),
    }
    for name, (key, value) in good.items():
        table = app.tables[name]
        table.apply_changelog_batch([_event(table.changelog_topic_name, 1, orjson.dumps(key), orjson.dumps(value))])
        got = table._rocks.get(1, orjson.dumps(key)) if name != "catalog" else orjson.dumps(table.data[key])
        assert orjson.loads(got) == value, name


def _input_topics_sample(n: int = 8) -> list[tuple[str, int, bytes | None, bytes | None, str]]:
    """Seeded hostile records of the other topics the worker reads (comments, videos, review-decisions), made
    by tests/test_hostile.py's makers, so the worker test below covers every topic it reads but `events`
    (whose own worker test is there)."""
    from tests.test_hostile import DECISION_KINDS, KINDS, VIDEO_KINDS, _decision, _video, make

    rng, t, out = random.Random(11), S.topics, []
    for n in range(n):
        kind = rng.choice([k for k in KINDS if k not in ("valid", "mb_text", "too_large")])
        value, reason, e = make(kind, rng, n, "hc")
        out.append((t.comments, -1, e["user_id"].encode(), value, reason))
        maker, reason = VIDEO_KINDS[rng.choice([k for k in VIDEO_KINDS if k not in ("valid", "too_large")])]
        out.append((t.videos, -1, None, maker(rng, _video(rng, n)), reason))
        maker, reason = DECISION_KINDS[rng.choice([k for k in DECISION_KINDS if k != "too_large"])]
        out.append((t.review_decisions, -1, b"hu1", maker(rng, _decision(rng, n)), reason))
    return out


@pytest.mark.integration
def test_a_worker_dead_letters_hostile_records_of_every_internal_topic_and_its_index_is_unchanged():
    """Its tables' changelogs as its recovery reads them at start, the other internal topics live."""
    from confluent_kafka import Producer

    from lab.local import LocalStack, total, wait_for
    from lab.recording import read_topic

    own = {changelog(S, name) for name in ("users", "item-state", "reviews", "catalog")}  # read at recovery
    early = random.Random(7).sample([r for r in HOSTILE if r[0] in own], 30)
    sample = early + random.Random(7).sample([r for r in HOSTILE if r[0] not in own], 50) + _input_topics_sample()
    with LocalStack() as stack:
        stack.start_broker()
        producer = Producer({"bootstrap.servers": stack.bootstrap, "partitioner": "murmur2_random"})

        def produce(records) -> None:
            for topic, partition, key, value, _ in records:
                kwargs = {} if partition < 0 else {"partition": partition}
                producer.produce(topic, value, key, **kwargs)
            producer.flush(30)

        produce(early)  # the tables' changelogs: what the worker's recovery reads first
        worker = stack.start_worker()
        wait_for(lambda: "reelstream_index_items" in worker.metrics(), 30, "worker up", [worker.log], worker.proc)
        index_before = worker.metrics()["reelstream_index_items"]
        produce(sample[len(early):])
        expected = collections.Counter(reason for *_, reason in sample)

        def dead() -> collections.Counter:
            return collections.Counter(json.loads(r.value)["reason"] for r in read_topic(stack.bootstrap, S.topics.dlq))

        try:
            wait_for(lambda: dead() == expected, 60, f"{sum(expected.values())} dead letters", [worker.log], worker.proc)
        except TimeoutError:
            assert dead() == expected  # the difference, by reason
        metrics = worker.metrics()
        for reason, n in expected.items():
            assert total(metrics, f'reelstream_dlq_messages_total{{reason="{reason}"}}') == n
        assert metrics["reelstream_index_items"] == index_before
        asyncio.run(asyncio.sleep(1.0))  # nothing more arrives later
        assert dead() == expected and worker.proc.poll() is None
