"""The moderation workflow's logic without a broker (streams/review.py through streams.pipeline): what is
queued, what a reviewer's decision emits, appeals, erasure of pending items, and decisions that are not
applied. tests/test_review_page.py runs the same through a real worker and a real browser."""

from __future__ import annotations

import json
import re

import orjson
import pytest

from contracts.review import AppealOutcome, ReviewItem, StatementOfReasons
from models.recs.serving import load_recommender
from models.text.base import CommentScore
from monitoring import metrics
from streams.pipeline import Message, MappingStore, Pipeline
from streams.review import ReviewDesk, decision_record, sampled
from streams.settings import ReviewSettings
from tests.sinks import Sink

NOW = 1_800_000_000.0
ZERO = {"toxic": 0.0, "offensive": 0.0, "hate": 0.0, "sexism": 0.0, "spam": 0.0}
SENT = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
VERDICTS = {  # the model's verdict per comment text (the scorer itself is tested in test_text_models.py)
    "ok": CommentScore(ZERO, SENT, "en", "allow", []),
    "borderline": CommentScore({**ZERO, "toxic": 0.6}, SENT, "en", "review", ["toxic>=0.50"]),
    "awful": CommentScore({**ZERO, "hate": 0.97}, SENT, "en", "block", ["hate>=0.90"]),
}


class World:
    def __init__(self, settings, **review) -> None:
        self.s = settings.model_copy(update={"review": ReviewSettings(**{"sample_allow": 0.0, "sample_block": 0.0, **review})})
        self.sink = Sink()
        self.users: dict = {}
        self.reviews: dict = {}
        self.clock = NOW
        self.pipe = Pipeline(self.s, self.users, {}, load_recommender(self.s.recs, self.s.index), self.sink.emit,
                             clock=lambda: self.clock)  # fmt: skip
        self.pipe.review = ReviewDesk(self.s, MappingStore(self.reviews), self.sink.emit, self.pipe.dead_letter,
                                      clock=lambda: self.clock)  # fmt: skip
        self.n = 0

    def send(self, type_: str, user: str = "u1", **fields) -> str:
        self.n += 1
        event_id = fields.pop("event_id", f"e{self.n}")
        event = {"schema_version": 1, "event_id": event_id, "type": type_, "user_id": user, "video_id": "v1",
                 "ts": NOW - 60, **fields}  # fmt: skip
        self.pipe.process_events([Message("events", 0, self.n, NOW, user.encode(), json.dumps(event).encode())])
        return event_id

    def comment(self, text: str, user: str = "u1") -> str:
        event_id = self.send("comment", user, text=text)
        forwarded = [Message("comments", 0, self.n, NOW, k, v) for t, k, v in self.sink.sent if t == "comments"]
        pending = self.pipe.comments_batch(forwarded[-1:])
        self.pipe.apply_comment_scores(pending, [VERDICTS[text] for _, c in pending], "comment-net-t")
        return event_id

    def decide(self, item_id: str, decision: str, category: str = "none", key: bytes | None = None,
               raw: bytes | None = None) -> bytes:  # fmt: skip
        item = self.queue()[item_id]
        value = raw if raw is not None else decision_record(item, decision, category, "per the guidelines", "ana", NOW)
        key = item["user_id"].encode() if key is None else key
        self.n += 1
        self.pipe.review.process_decisions([Message("review-decisions", 0, self.n, NOW, key, value)])
        return value

    def queue(self) -> dict[str, dict]:
        """The compacted review-queue: the latest value per item id, tombstones removing."""
        latest: dict[str, dict] = {}
        for topic, key, value in self.sink.sent:
            if topic == "review-queue":
                if value is None:
                    latest.pop(key.decode(), None)
                else:
                    latest[key.decode()] = orjson.loads(value)
        return latest

    def values(self, topic: str) -> list[dict]:
        return [v for v in self.sink.values(topic) if v is not None]


@pytest.fixture
def world(settings):
    return World(settings)


def test_review_flags_are_queued_with_what_a_reviewer_needs_and_blocks_get_a_statement(world):
    world.comment("ok")
    borderline = world.comment("borderline")
    awful = world.comment("awful")
    queue = world.queue()
    assert list(queue) == [borderline]  # allow and block are not sampled at share 0
    item = ReviewItem.model_validate(queue[borderline])
    assert (item.kind, item.text, item.lang, item.model_action, item.model_version, item.video_id) == (
        "review", "borderline", "en", "review", "comment-net-t", "v1")
    assert item.scores["toxic"] == 0.6 and item.reasons == ["toxic>=0.50"] and item.queued_at == NOW
    [sor] = [StatementOfReasons.model_validate(v) for v in world.values("statements-of-reasons")]
    assert sor.puid == awful and sor.automated_decision == "AUTOMATED_DECISION_FULLY" and sor.automated_detection == "Yes"
    assert sor.content_language == "EN" and sor.content_type == ["CONTENT_TYPE_TEXT"]  # the TDB's value forms
    assert sor.category == "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH" and "hate 0.97 (threshold 0.90)" in sor.decision_facts
    assert sor.application_date == "2027-01-15" and "u1" not in orjson.dumps(sor.model_dump()).decode()


def test_quality_control_samples_allowed_and_blocked_comments_stably(settings):
    world = World(settings, sample_allow=1.0, sample_block=1.0)
    ok, awful = world.comment("ok"), world.comment("awful")
    assert {i["kind"] for i in world.queue().values()} == {"sample"} and set(world.queue()) == {ok, awful}
    assert sampled("e-x", 0.3) == sampled("e-x", 0.3)  # a redelivery makes the same choice
    assert 0.2 < sum(sampled(f"e{i}", 0.3) for i in range(2000)) / 2000 < 0.4


def test_a_removal_overrides_the_model_with_a_human_statement_and_leaves_the_queue(world):
    before = metrics.REVIEW_MODEL_AGREEMENT.labels("review", "remove")._value.get()
    borderline = world.comment("borderline")
    world.decide(borderline, "remove", "hate")
    assert world.queue() == {}
    override = world.values("moderation-flags")[-1]
    assert override["event_id"] == borderline and override["action"] == "block"
    assert (override["decided_by"], override["reviewer"], override["decided_at"]) == ("reviewer", "ana", NOW)
    [sor] = world.values("statements-of-reasons")
    assert sor["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED" and sor["incompatible_content_ground"].endswith("hate")
    assert "per the guidelines" in sor["decision_facts"] and sor["sor_id"].startswith(f"{borderline}:")
    assert sor["category"] == "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH" and sor["automated_detection"] == "Yes"
    assert metrics.REVIEW_MODEL_AGREEMENT.labels("review", "remove")._value.get() == before + 1
    assert world.reviews["u1"]["blocked"][borderline]["text"] == "borderline"  # now appealable


def test_approve_allows_and_escalate_keeps_the_item_for_a_senior_reviewer(world):
    a, b = world.comment("borderline"), world.comment("borderline")
    world.decide(a, "approve")
    world.decide(b, "escalate")
    assert list(world.queue()) == [b] and world.queue()[b]["kind"] == "escalated"
    assert [f["action"] for f in world.values("moderation-flags") if f["decided_by"] == "reviewer"] == ["allow"]
    assert world.values("statements-of-reasons") == []


def test_an_appeal_re_enters_the_queue_and_its_outcome_is_emitted(world):
    awful = world.comment("awful")
    appeal = world.send("appeal", target_event_id=awful, text="it was a quote")
    item = world.queue()[appeal]
    assert (item["kind"], item["event_id"], item["text"], item["appeal_text"]) == ("appeal", awful, "awful", "it was a quote")
    assert "appeal" not in {r[1] for r in world.users.get("u1", {"events": []})["events"]}  # never an interaction
    world.decide(appeal, "approve")
    [outcome] = [AppealOutcome.model_validate(v) for v in world.values("appeal-outcomes")]
    assert (outcome.appeal_id, outcome.event_id, outcome.outcome) == (appeal, awful, "reversed")
    assert world.values("moderation-flags")[-1]["action"] == "allow" and world.queue() == {}
    again = world.send("appeal", target_event_id=awful)  # reversed: nothing blocked to appeal any more
    assert world.values("appeal-outcomes")[-1] == {**world.values("appeal-outcomes")[-1], "appeal_id": again,
                                                   "outcome": "not_appealable"}  # fmt: skip


def test_an_upheld_appeal_cannot_be_appealed_again_and_old_blocks_expire(world):
    awful = world.comment("awful")
    appeal = world.send("appeal", target_event_id=awful)
    world.decide(appeal, "remove")
    assert world.values("appeal-outcomes")[-1]["outcome"] == "upheld"
    world.send("appeal", target_event_id=awful)
    assert world.values("appeal-outcomes")[-1]["detail"] == "already appealed"
    late = world.comment("awful")
    world.clock = NOW + world.s.review.appeal_window_s + 1
    world.send("appeal", target_event_id=late)
    assert world.values("appeal-outcomes")[-1]["outcome"] == "not_appealable"
    world.send("appeal", target_event_id="someone-elses", user="u2")
    assert world.values("appeal-outcomes")[-1]["outcome"] == "not_appealable"


def test_user_delete_removes_the_pending_items_of_that_user_only(world):
    mine = [world.comment("borderline"), world.comment("borderline")]
    theirs = world.comment("borderline", user="u2")
    world.send("user_delete", "u1")
    assert list(world.queue()) == [theirs] and "u1" not in world.reviews
    tombstones = [k.decode() for t, k, v in world.sink.sent if t == "review-queue" and v is None]
    assert sorted(tombstones) == sorted(mine)


def test_decisions_that_cannot_be_applied_are_dead_lettered_and_change_nothing(world):
    borderline = world.comment("borderline")
    good = orjson.loads(decision_record(world.queue()[borderline], "remove", "hate", "", "ana", NOW))
    world.decide(borderline, "remove", raw=b"{not json")
    world.decide(borderline, "remove", raw=orjson.dumps({**good, "decision": "delete-account"}))
    world.decide(borderline, "remove", raw=orjson.dumps({**good, "category": "<script>"}))
    world.decide(borderline, "remove", key=b"u2")  # keyed to another user than it names
    world.decide(borderline, "remove", raw=orjson.dumps({**good, "item_id": "never-queued"}))
    dead = world.values("events.dlq")
    assert [d["reason"] for d in dead] == ["invalid_decision"] * 4 + ["stale_decision"]
    assert dead[0]["topic"] == "review-decisions"
    assert list(world.queue()) == [borderline] and world.values("statements-of-reasons") == []
    assert all(f["decided_by"] == "model" for f in world.values("moderation-flags"))
    applied = world.decide(borderline, "remove")
    world.pipe.review.process_decisions([Message("review-decisions", 0, 99, NOW, b"u1", applied)])  # redelivered
    assert world.values("events.dlq")[-1]["reason"] == "stale_decision"  # decided already: applied once


def test_queue_depth_and_the_age_of_the_oldest_item(world):
    world.comment("borderline")
    world.clock = NOW + 30
    world.comment("borderline", user="u2")
    world.clock = NOW + 90
    assert world.pipe.review.queue_stats(world.reviews.values()) == (2, 90.0)
    assert world.pipe.review.queue_stats([]) == (0, 0.0)


def test_statement_values_are_ones_the_transparency_database_accepts(settings):
    """Enum keys and forms as the TDB API validates them (README, Statements of reasons: what was checked):
    a sampled allowed comment removed without a category, its event id one the TDB would refuse as a puid."""
    world = World(settings, sample_allow=1.0)
    odd = world.send("comment", text="ok", event_id="c:1/x y")
    forwarded = [Message("comments", 0, world.n, NOW, k, v) for t, k, v in world.sink.sent if t == "comments"]
    pending = world.pipe.comments_batch(forwarded[-1:])
    world.pipe.apply_comment_scores(pending, [VERDICTS["ok"]], "comment-net-t")
    world.decide(odd, "remove", "none")
    [sor] = world.values("statements-of-reasons")
    assert sor["category"] == "STATEMENT_CATEGORY_OTHER_VIOLATION_TC"
    assert sor["puid"].startswith("h-") and re.fullmatch(r"[A-Za-z0-9_-]{1,500}", sor["puid"])
    assert sor["sor_id"].startswith("c:1/x y:")  # the platform's own id keeps the event id
    assert [k for t, k, _ in world.sink.sent if t == "statements-of-reasons"] == [sor["puid"].encode()]
    with pytest.raises(ValueError):
        StatementOfReasons.model_validate({**sor, "automated_detection": True})
    with pytest.raises(ValueError):
        StatementOfReasons.model_validate({**sor, "content_language": "en"})
    with pytest.raises(ValueError):
        StatementOfReasons.model_validate({**sor, "category": "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE"})
