"""Streaming recommendations through a real worker: ALS follows a user's new taste, removals are final."""

from __future__ import annotations

import collections
import json
import time

import orjson
import pytest
from confluent_kafka import Producer

from lab.generator import GeneratorConfig, generate
from lab.local import LocalStack, total, wait_for
from lab.recording import read_topic, replay

pytestmark = pytest.mark.integration


def _send(bootstrap, topic, key, obj):
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    p.produce(topic, json.dumps(obj).encode(), key.encode())
    p.flush(10)


def _recs(bootstrap, user=None):
    out = [orjson.loads(r.value) for r in read_topic(bootstrap, "recommendations") if r.value]
    return [r for r in out if user is None or r["user_id"] == user]


def _stored_history(bootstrap, user) -> list[list]:
    """The user's rows in the users table, as its changelog holds them last."""
    from lab.chaos import last_values
    from streams.settings import Settings
    from streams.topics import USERS_TABLE, changelog

    return orjson.loads(last_values(bootstrap, changelog(Settings(), USERS_TABLE))[orjson.dumps(user)])["events"]


def _wait(predicate, timeout=30):
    wait_for(predicate, timeout, "condition in test")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "stream.jsonl"
    truth = generate(GeneratorConfig(users=150, videos=120, events=6000, seed=21, clusters=4), path)
    with LocalStack(env={"REELSTREAM_RECS__ITEM_REFRESH_INTERVAL_S": "0.5"}) as s:
        s.start_broker()
        worker = s.start_worker()
        sent = replay(s.bootstrap, path, rate=3000)
        s.wait_consumed(sent.sent, timeout=180)
        time.sleep(2)  # at least one more item refresh after the last event
        yield s, worker, truth


def test_recommendations_move_toward_a_cluster_after_events_in_it(stack):
    s, worker, truth = stack
    clusters = truth["video_cluster"]
    removed = set(truth["removed_videos"]) | set(truth["blocked_videos"])
    user = next(u for u, taste in truth["user_taste"].items() if u not in truth["deleted_users"] and len(taste) == 1)
    own = int(next(iter(truth["user_taste"][user])))
    target = (own + 2) % 4  # a cluster the user never cared for
    share = lambda rec: sum(clusters[i["video_id"]] == target for i in rec["items"]) / max(1, len(rec["items"]))

    ts = 1_800_000_000.0
    _send(s.bootstrap, "events", user, {"schema_version": 1, "event_id": "probe-0", "type": "watch", "user_id": user,
                                        "video_id": next(v for v, c in clusters.items() if c == own and v not in removed),
                                        "ts": ts, "watch_ms": 1000, "duration_ms": 10000})  # fmt: skip
    _wait(lambda: any(r["source_event_id"] == "probe-0" for r in _recs(s.bootstrap, user)))
    before = next(r for r in _recs(s.bootstrap, user) if r["source_event_id"] == "probe-0")
    assert before["model_version"].startswith("als"), before

    videos = [v for v, c in clusters.items() if c == target and v not in removed][:12]
    for n, video in enumerate(videos, 1):
        _send(s.bootstrap, "events", user, {"schema_version": 1, "event_id": f"probe-{n}", "type": "like",
                                            "user_id": user, "video_id": video, "ts": ts + 10 * n})  # fmt: skip
    last = f"probe-{len(videos)}"
    _wait(lambda: any(r["source_event_id"] == last for r in _recs(s.bootstrap, user)))
    after = next(r for r in _recs(s.bootstrap, user) if r["source_event_id"] == last)
    assert after["model_version"].startswith("als")
    assert share(after) > share(before) and share(after) >= 0.5, (share(before), share(after), after["items"])
    # every ALS recommendation says why: at most 3 of the user's own videos, most of them the new cluster's
    # (an exploration slot, when the list has one, is its last item and explains nothing: not ALS's)
    ranked = after["items"][:-1] if after["items"][-1]["reason"] == "explore" else after["items"]
    assert ranked == [i for i in after["items"] if i["reason"] != "explore"], after["items"]
    assert all(i["reason"] == "als" and 1 <= len(i["because"]) <= 3 for i in ranked), after["items"]
    mine = {row[1] for row in _stored_history(s.bootstrap, user)}  # HistoryRow: event_id, video_id, ...
    assert set(videos) <= mine and all(set(i["because"]) <= mine for i in ranked), after["items"]
    named = collections.Counter(v for i in after["items"] for v in i["because"])
    assert sum(n for v, n in named.items() if v in videos) > sum(n for v, n in named.items() if v not in videos)


def test_a_removed_video_is_never_recommended_after_its_removal(stack):
    s, worker, truth = stack
    counts = collections.Counter(i["video_id"] for r in _recs(s.bootstrap) for i in r["items"])
    victim, _ = counts.most_common(1)[0]
    removals_before = total(worker.metrics(), "reelstream_events_total{type=\"video_remove\"}")
    _send(s.bootstrap, "videos", victim, {"schema_version": 1, "video_id": victim, "type": "remove", "ts": 1.9e9})
    _wait(lambda: total(worker.metrics(), "reelstream_events_total{type=\"video_remove\"}") > removals_before)
    processed_at = time.time()
    users = sorted({r["user_id"] for r in _recs(s.bootstrap)})[:40]
    for n, user in enumerate(users):
        _send(s.bootstrap, "events", user, {"schema_version": 1, "event_id": f"after-removal-{n}", "type": "skip",
                                            "user_id": user, "video_id": victim, "ts": 1.9e9 + n})  # fmt: skip
    _wait(lambda: sum(r["source_event_id"].startswith("after-removal") for r in _recs(s.bootstrap)) >= len(users))
    later = [r for r in _recs(s.bootstrap) if r["generated_at"] > processed_at]
    assert later and not any(i["video_id"] == victim for r in later for i in r["items"])


def test_a_new_batch_model_is_swapped_in_without_stopping_the_worker(tmp_path):
    from lab.demo import SAMPLE

    def train(source, out):
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "reelstream.cli", "train", "als", "--from", str(source), "--out", str(out)],
                       check=True, capture_output=True)  # fmt: skip
        return json.loads((out / "meta.json").read_text())["model_version"]

    model_dir = tmp_path / "model"
    first = train(SAMPLE, model_dir)
    other = tmp_path / "other.jsonl"
    generate(GeneratorConfig(users=80, videos=60, events=1500, seed=99), other)
    env = {"REELSTREAM_RECS__MODEL_DIR": str(model_dir), "REELSTREAM_MODEL_POLL_INTERVAL_S": "0.5"}
    with LocalStack(env=env) as s:
        s.start_broker()
        worker = s.start_worker()
        user = "u000001"  # in the sample, so the first model knows the user's videos
        like = {"schema_version": 1, "type": "like", "user_id": user, "video_id": "v000002", "ts": 1.8e9}
        _send(s.bootstrap, "events", user, {**like, "event_id": "swap-1"})
        _wait(lambda: any(r["source_event_id"] == "swap-1" for r in _recs(s.bootstrap, user)))
        assert next(r for r in _recs(s.bootstrap, user) if r["source_event_id"] == "swap-1")["model_version"] == first

        second = train(other, model_dir)
        assert second != first
        _wait(lambda: f'recommender="{second}"' in "".join(worker.metrics()))
        _send(s.bootstrap, "events", user, {**like, "event_id": "swap-2", "video_id": "v000003"})
        _wait(lambda: any(r["source_event_id"] == "swap-2" for r in _recs(s.bootstrap, user)))
        rec = next(r for r in _recs(s.bootstrap, user) if r["source_event_id"] == "swap-2")
        assert rec["model_version"] == second and worker.proc.poll() is None
