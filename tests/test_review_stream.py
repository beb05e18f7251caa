"""The moderation workflow through real workers on the embedded broker: the demo's counts, an appeal and its
outcome, a user's pending items erased by `user_delete`, and a decision that is not applied."""

from __future__ import annotations

import orjson
import pytest

from lab.local import LocalStack, wait_for
from lab.recording import read_topic

pytestmark = pytest.mark.integration


def test_the_demo_queues_review_flags_and_a_sample_and_states_reasons_for_every_block():
    from contracts.review import StatementOfReasons
    from lab.demo import run_demo
    from streams.review import sampled
    from streams.settings import Settings

    s = Settings()
    result = run_demo(s)
    summary, flags = result["summary"], result["flags"]
    share = {"allow": s.review.sample_allow, "block": s.review.sample_block, "review": 1.0}
    expected = {f["event_id"] for f in flags if sampled(f["event_id"], share[f["action"]])}
    assert summary["review_queued"] == len(expected) > 0
    blocks = [f for f in flags if f["action"] == "block"]
    assert summary["statements_of_reasons"] == len(blocks) > 0


def _event(event_id: str, user: str, type_: str, **fields) -> bytes:
    return orjson.dumps({"schema_version": 1, "event_id": event_id, "type": type_, "user_id": user, "video_id": "v9",
                         "ts": 1.8e9, **fields})  # fmt: skip


def test_an_appeal_is_decided_and_a_deleted_user_leaves_the_queue():
    from streams.review import decision_record

    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        send = stack.send

        def latest(topic: str) -> dict:
            out = {}
            for r in read_topic(stack.bootstrap, topic):
                out[r.key.decode()] = None if r.value is None else orjson.loads(r.value)
            return out

        def values(topic: str) -> list:
            return [orjson.loads(r.value) for r in read_topic(stack.bootstrap, topic) if r.value is not None]

        send("events", _event("spam-1", "ann", "comment", text="check out my channel for free money http://spam.example"), "ann")
        for n in range(2):
            send("events", _event(f"insult-{n}", "bob", "comment", text="you are a complete idiot and everyone hates you"), "bob")
        wait_for(lambda: {"insult-0", "insult-1"} <= set(latest("review-queue")), 60, "bob's comments queued",
                 [worker.log], worker.proc)  # fmt: skip
        wait_for(lambda: any(v["puid"] == "spam-1" for v in values("statements-of-reasons")), 60, "the block stated",
                 [worker.log], worker.proc)  # fmt: skip

        send("events", _event("appeal-1", "ann", "appeal", target_event_id="spam-1", text="it is my own channel"), "ann")
        item = wait_for(lambda: latest("review-queue").get("appeal-1"), 60, "the appeal queued", [worker.log], worker.proc)
        assert (item["kind"], item["event_id"], item["appeal_text"]) == ("appeal", "spam-1", "it is my own channel")
        send("review-decisions", b'{"decision": "approve"}', "ann")  # not a decision: dead-lettered
        send("review-decisions", decision_record(item, "approve", "none", "own channel", "ana", 1.8e9 + 5), "ann")
        outcome = wait_for(lambda: values("appeal-outcomes"), 60, "the appeal's outcome", [worker.log], worker.proc)
        assert [(o["appeal_id"], o["outcome"]) for o in outcome] == [("appeal-1", "reversed")]
        override = [f for f in values("moderation-flags") if f.get("decided_by") == "reviewer"]
        assert [(f["event_id"], f["action"], f["reviewer"]) for f in override] == [("spam-1", "allow", "ana")]
        assert [d["reason"] for d in values("events.dlq")] == ["invalid_decision"]

        send("events", _event("bye", "bob", "user_delete"), "bob")
        wait_for(lambda: latest("review-queue").get("insult-0", 0) is None and latest("review-queue").get("insult-1", 0) is None,
                 60, "bob's items erased", [worker.log], worker.proc)  # fmt: skip
        assert "appeal-1" in latest("review-queue") and latest("review-queue")["appeal-1"] is None  # decided
        metrics = worker.metrics()
        assert metrics["reelstream_review_items_erased_total"] == 2
        assert metrics["reelstream_review_queue_items"] == 0
