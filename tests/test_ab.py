"""A/B arms: stable assignment, every list stamped with its arm, the control arm, and the online outcome
counted by the worker equal to the report recomputed from the topics (in process, then through a worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from models.recs.arms import Arm, ListOutcomes, assign, check_arms, position, replay_outcomes, report, wilson

ROOT = Path(__file__).resolve().parent.parent
ARMS_JSON = json.dumps([
    {"name": "control", "share": 0.5, "ranker": "popularity"},
    {"name": "als", "share": 0.3},
    {"name": "explore", "share": 0.2, "explore_share": 0.3, "diversity": 0.3},
])  # fmt: skip


def test_assignment_is_stable_follows_the_shares_and_a_new_salt_redraws():
    arms = [Arm(name="a", share=0.5), Arm(name="b", share=0.3), Arm(name="c", share=0.2)]
    users = [f"u{i}" for i in range(20_000)]
    got = Counter(assign(u, arms, "exp-1").name for u in users)
    for arm in arms:
        assert abs(got[arm.name] / len(users) - arm.share) < 0.015, got
    assert [assign(u, arms, "exp-1").name for u in users[:50]] == [assign(u, arms, "exp-1").name for u in users[:50]]
    moved = sum(assign(u, arms, "exp-1").name != assign(u, arms, "exp-2").name for u in users)
    assert moved > 0.4 * len(users)  # independent draws: ~62% change arm with these shares
    assert 0 <= position("u1", "s") < 1 and assign("u1", [], "s") is None


def test_arms_must_have_unique_names_and_shares_adding_up_to_one(monkeypatch):
    from pydantic import ValidationError

    from streams.settings import Settings

    with pytest.raises(ValueError, match="add up to 1"):
        check_arms([Arm(name="a", share=0.5), Arm(name="b", share=0.4)])
    with pytest.raises(ValueError, match="unique"):
        check_arms([Arm(name="a", share=0.5), Arm(name="a", share=0.5)])
    with pytest.raises(ValidationError):
        Arm(name="User Id 42", share=1.0)  # a label value: lower-case, short, no spaces
    monkeypatch.setenv("REELSTREAM_RECS__ARMS", ARMS_JSON)
    arms = Settings().recs.arms
    assert [(a.name, a.ranker, a.explore_share) for a in arms] == [
        ("control", "popularity", None), ("als", "als", None), ("explore", "als", 0.3)
    ]  # fmt: skip
    monkeypatch.setenv("REELSTREAM_RECS__ARMS", '[{"name": "a", "share": 0.7}]')
    with pytest.raises(ValidationError, match="add up to 1"):
        Settings()


def test_wilson_interval_and_the_difference_from_the_control():
    low, high = wilson(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)  # the textbook value
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    outcomes = [("a", "watch")] * 30 + [("a", None)] * 70 + [("b", "like")] * 45 + [("b", None)] * 55
    out = report(outcomes, ["a", "b", "c"])
    assert out["control"] == "a" and out["arms"]["a"]["hit_rate"] == 0.3 and out["arms"]["b"]["like"] == 45
    diff = out["arms"]["b"]["vs_control"]
    assert diff["difference"] == pytest.approx(0.15) and diff["ci95"][0] > 0  # b is better, and it shows
    assert out["arms"]["c"] == {"lists": 0, "hits": 0, "hit_rate": None, "ci95": [0.0, 1.0]}


def test_an_open_list_is_closed_once_by_the_next_event_and_the_oldest_users_are_forgotten_first():
    lists = ListOutcomes(max_users=2)
    lists.served("u1", "a", ["v1", "v2"])
    assert lists.next_event("u1", "v2", "like") == ("a", "like")
    assert lists.next_event("u1", "v2", "like") is None  # closed
    lists.served("u1", "a", ["v1"])
    assert lists.next_event("u1", "v1", "skip") == ("a", None)  # a skip does not take a video up
    for user in ("u1", "u2", "u3"):
        lists.served(user, "a", ["v1"])
    assert lists.next_event("u1", "v1", "watch") is None and lists.next_event("u3", "v1", "watch") == ("a", "watch")


def _event(n: int, user: str, video: str, type_: str = "watch") -> bytes:
    extra = {"watch_ms": 9000, "duration_ms": 10000} if type_ == "watch" else {}
    return orjson.dumps({"schema_version": 1, "event_id": f"e{n}", "type": type_, "user_id": user,
                         "video_id": video, "ts": 1000.0 + n, **extra})  # fmt: skip


def _stream(users: int = 40, per_user: int = 12) -> list[bytes]:
    """Users with tastes in two halves of 40 videos, interleaved, some duplicates and a user_delete."""
    out, n = [], 0
    for step in range(per_user):
        for u in range(users):
            n += 1
            video = f"v{(u % 2) * 20 + (u * 7 + step * 3) % 20}"
            out.append(_event(n, f"u{u}", video, "like" if step % 3 == 0 else "watch"))
            if step == 5 and u % 10 == 0:
                out.append(out[-1])  # a redelivery
    out.append(orjson.dumps({"schema_version": 1, "event_id": "del", "type": "user_delete", "user_id": "u3",
                             "ts": 9999.0}))  # fmt: skip
    return out


def _counted() -> dict[tuple[str, ...], float]:
    from monitoring.metrics import REGISTRY

    out = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name in ("reelstream_ab_lists_closed_total", "reelstream_ab_list_hits_total"):
                out[(s.name, *s.labels.values())] = s.value
    return out


def test_every_list_carries_its_arm_and_the_worker_counts_what_the_topics_replay(monkeypatch):
    """The pipeline (the worker's code, in process) over a stream in batches of 7: every recommendation names
    the user's arm; the control arm serves popularity; its live counters equal `replay_outcomes` over the
    events and recommendations it was given and emitted."""
    from models.recs.serving import load_recommender
    from streams.pipeline import Message, Pipeline
    from streams.settings import Settings
    from tests.sinks import Sink

    monkeypatch.setenv("REELSTREAM_RECS__ARMS", ARMS_JSON)
    settings = Settings()
    sink = Sink()
    pipe = Pipeline(settings, {}, {}, load_recommender(settings.recs, settings.index), sink.emit)
    before = _counted()
    stream = _stream()
    for start in range(0, len(stream), 7):
        batch = stream[start : start + 7]
        pipe.process_events([Message("events", 0, start + i, 0.0, b"k", raw) for i, raw in enumerate(batch)])
    recs = [orjson.loads(v) for t, _, v in sink.sent if t == "recommendations" and v is not None]
    arms = {a.name: a for a in settings.recs.arms}
    assert recs and all(r["arm"] == assign(r["user_id"], settings.recs.arms, settings.recs.ab_salt).name for r in recs)
    assert {r["arm"] for r in recs} == set(arms)
    control = [r for r in recs if r["arm"] == "control"]
    assert all(r["model_version"] == "popularity-v1" and {i["reason"] for i in r["items"]} <= {"popular", "explore"}
               for r in control)  # fmt: skip
    live = {k: v - before.get(k, 0.0) for k, v in _counted().items() if v - before.get(k, 0.0)}
    replayed = replay_outcomes(stream, (v for t, _, v in sink.sent if t == "recommendations"),
                               max_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars)  # fmt: skip
    expected = Counter()
    for arm, engaged in replayed:
        expected[("reelstream_ab_lists_closed_total", arm)] += 1
        if engaged:
            expected[("reelstream_ab_list_hits_total", arm, engaged)] += 1
    assert live == dict(expected) and sum(v for k, v in live.items() if "closed" in k[0]) > 300


@pytest.mark.integration
def test_report_ab_from_a_worker_on_the_broker_matches_its_counters(tmp_path):
    """A real worker with three arms: `reelstream report ab` over the live topics, and over their recordings,
    gives the lists and hits the worker counted."""
    from lab.local import LocalStack
    from streams.producer import make_producer, produce

    with LocalStack(env={"REELSTREAM_RECS__ARMS": ARMS_JSON}) as stack:
        stack.start_broker()
        worker = stack.start_worker()
        producer = make_producer(stack.bootstrap)
        users = 30
        stream = _stream(users=users, per_user=8)
        # One round of the users' events at a time, consumed before the next: each list is closed by the
        # user's next event (two events of a user in one micro-batch close one list).
        sent = 0
        for start in range(0, len(stream), users):
            for raw in stream[start : start + users]:
                produce(producer, "events", raw, orjson.loads(raw)["user_id"].encode())
            producer.flush(10)
            sent += len(stream[start : start + users])
            stack.wait_consumed(sent, timeout=60, settle=0.2)
        metrics = worker.metrics()
        env = {"REELSTREAM_RECS__ARMS": ARMS_JSON, "PATH": "/usr/bin:/bin"}

        def cli(*args: str) -> dict | None:
            done = subprocess.run([sys.executable, "-m", "reelstream.cli", *args], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120, env=env, check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
            return json.loads(done.stdout.strip().splitlines()[-1]) if "--json" in args else None

        live = cli("report", "ab", "--bootstrap", stack.bootstrap, "--json")
        for topic in ("events", "recommendations"):
            cli("record", topic, str(tmp_path / f"{topic}.jsonl"), "--bootstrap", stack.bootstrap)
        recorded = cli("report", "ab", "--from", str(tmp_path / "events.jsonl"), "--from",
                       str(tmp_path / "recommendations.jsonl"), "--json")  # fmt: skip
    assert live == recorded and live["control"] == "control"
    for name, arm in live["arms"].items():
        assert arm["lists"] == metrics.get(f'reelstream_ab_lists_closed_total{{arm="{name}"}}', 0), (name, arm)
        hits = sum(
            v for k, v in metrics.items() if k.startswith("reelstream_ab_list_hits_total") and f'arm="{name}"' in k
        )
        assert arm["hits"] == hits, (name, arm)
    assert sum(a["lists"] for a in live["arms"].values()) > 150
