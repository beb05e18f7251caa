"""`reelstream eval recs --via-kafka`: a small synthetic replay through the embedded broker, a real worker
(killed with SIGKILL and replaced once) and the trainer, scored from the recommendations it emitted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
EVENTS, WARMUP = 2500, 0.2


@pytest.fixture(scope="module")
def result():
    cmd = [sys.executable, "-m", "reelstream.cli", "eval", "recs", "--dataset", "synthetic", "--via-kafka", "--json",
           "--users", "300", "--videos", "200", "--events", str(EVENTS), "--warmup", str(WARMUP), "--restarts", "1"]  # fmt: skip
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def test_the_result_has_the_in_process_shape_and_the_deployment_fields(result):
    for name in ("popularity", "popularity_decayed"):
        assert set(result[name]) == {"hr@10", "ndcg@10", "coverage@10", "unknown_user_events"}, result[name]
    assert set(result["streaming"]) == {"hr@10", "ndcg@10", "coverage@10", "unknown_user_events", "explained_share"}
    assert 0 < result["streaming"]["coverage@10"] <= 1
    assert result["streaming"]["explained_share"] > 0.9  # what the worker emitted names its reasons
    for key in ("events", "replayed", "seconds", "dataset", "settings", "refits", "model_versions", "dead_letters"):
        assert key in result, key
    assert result["via_kafka"] is True and result["bootstrap"] is False
    assert result["dataset"] == "synthetic" and result["replayed"] == EVENTS
    assert result["workers"] == 1 and result["restarts"] == 1


def test_every_evaluated_event_is_scored_against_the_latest_recommendation(result):
    evaluated = EVENTS - int(EVENTS * WARMUP)
    assert result["events"] + result["skipped_seen"] == evaluated
    assert result["events"] > 800
    # Scored against a list that reflected all of the user's earlier events, before and after the kill.
    assert result["stale_recs"] == 0, result["stale_examples"]
    # Only users never seen before have no list yet.
    assert result["streaming"]["unknown_user_events"] < 0.2 * result["events"]


def test_the_stack_lost_nothing_and_the_trainer_refitted(result):
    assert result["offset_gaps"] == 0 and result["dead_letters"] == 0
    assert result["changelog_pruned_at_restart"] is False
    assert result["users_lost_at_restart"] == [0]  # the new worker recovered every user's history
    assert result["refits"] >= 1 and result["model_versions"] >= 2


def test_the_deployed_streaming_model_beats_popularity(result):
    streaming, popularity = result["streaming"], result["popularity_decayed"]
    assert streaming["hr@10"] > 0
    assert streaming["hr@10"] > popularity["hr@10"] and streaming["ndcg@10"] > popularity["ndcg@10"], result
