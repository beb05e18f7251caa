"""The moderation workflow on the worker (issue #20): what goes to the review queue, what a reviewer's decision
does, appeals, and DSA statements of reasons. Faust-free like streams.pipeline, which calls it.

State: the `reviews` table, keyed by user id and co-partitioned with `events`, `comments` and
`review-decisions` (all keyed by user id), so every change to a user's queue is made by the one worker that
owns the user, and a `user_delete` (on `events`) can remove the user's pending items. A user's record:
`{"pending": {item_id: ReviewItem as JSON}, "blocked": {event_id: {...what an appeal needs}}}`. Blocked
comments are kept for the appeal window only (ReviewSettings), at most `max_blocked_per_user` of them.

Outputs: `review-queue` (keyed by item id, compacted: a tombstone once an item is decided or erased, so the
latest value per key is exactly the pending queue), `moderation-flags` (a reviewer's decision is a second flag
for the comment, `decided_by: reviewer`, which overrides the model's), `statements-of-reasons` (every block,
automated or human) and `appeal-outcomes`. Delivery is at-least-once like the rest of the worker: a redelivered
comment or decision produces the same records again (same keys and ids), which consumers deduplicate on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import orjson

from contracts.events import Appeal, Comment, InvalidMessage, ModerationFlag, dumps
from contracts.review import (
    BLOCKED_FIELDS,
    DSA_CATEGORY,
    AppealOutcome,
    ReviewDecision,
    ReviewItem,
    StatementOfReasons,
    parse_decision,
    tdb_puid,
)
from monitoring import metrics
from streams.settings import Settings
from streams.topics import partition_for

# What a decision makes of the comment: the overriding flag's action.
_ACTION = {"approve": "allow", "remove": "block", "escalate": "review"}


def sampled(event_id: str, share: float) -> bool:
    """A stable pseudo-random choice per comment: a redelivery, or another worker, makes the same one."""
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


class ReviewDesk:
    """Reads and writes the `reviews` table (a streams.pipeline.UserStore) and emits the workflow's records."""

    def __init__(
        self,
        settings: Settings,
        table: Any,
        emit: Callable[..., None],
        dead_letter: Callable[[Any, InvalidMessage], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.r = settings.review
        self.t = settings.topics
        self.table = table
        self.emit = emit
        self.dead_letter = dead_letter
        self.clock = clock

    # --- state ----------------------------------------------------------------------------------------
    def _partition(self, user_id: str) -> int:
        return partition_for(user_id.encode(), self.s.partitions)

    def _load(self, user_id: str) -> dict[str, dict[str, Any]]:
        """A copy of the user's record (the table hands out its stored object), blocks past the window gone."""
        record = self.table.get(user_id) or {}
        horizon = self.clock() - self.r.appeal_window_s
        blocked = {k: v for k, v in record.get("blocked", {}).items() if v["blocked_at"] >= horizon}
        if len(blocked) > self.r.max_blocked_per_user:
            newest = sorted(blocked.items(), key=lambda kv: kv[1]["blocked_at"])[-self.r.max_blocked_per_user :]
            blocked = dict(newest)
        return {"pending": dict(record.get("pending", {})), "blocked": blocked}

    def _store(self, user_id: str, record: dict[str, dict[str, Any]]) -> None:
        if record["pending"] or record["blocked"]:
            self.table.put(user_id, record, self._partition(user_id))
        elif self.table.get(user_id) is not None:
            self.table.remove(user_id, self._partition(user_id))

    def _queue(self, record: dict, item: ReviewItem) -> None:
        """Into the user's pending items and onto review-queue (an item already pending keeps its place)."""
        known = record["pending"].get(item.item_id)
        if known is not None and known["kind"] == item.kind:
            item = item.model_copy(update={"queued_at": known["queued_at"]})
        else:
            metrics.REVIEW_QUEUED.labels(item.kind).inc()
        record["pending"][item.item_id] = item.model_dump(mode="json")
        self.emit(self.t.review_queue, item.item_id.encode(), dumps(item), None)

    def _unqueue(self, record: dict, item_id: str) -> None:
        record["pending"].pop(item_id, None)
        self.emit(self.t.review_queue, item_id.encode(), None, None)  # tombstone: off the compacted queue

    # --- the model's flags ------------------------------------------------------------------------------
    def flagged(self, scored: Iterable[tuple[Comment, ModerationFlag]]) -> None:
        """After moderation: `review` flags and a sample of `allow`/`block` go to the queue; every block gets
        a statement of reasons and stays appealable."""
        by_user: dict[str, dict] = {}
        now = self.clock()
        for event, flag in scored:
            share = {"allow": self.r.sample_allow, "block": self.r.sample_block}.get(flag.action, 1.0)
            is_block = flag.action == "block"
            if not (is_block or sampled(event.event_id, share)):
                continue
            record = by_user.get(event.user_id)
            if record is None:
                record = by_user[event.user_id] = self._load(event.user_id)
            if flag.action == "review" or sampled(event.event_id, share):
                kind = "review" if flag.action == "review" else "sample"
                self._queue(record, _item(event.event_id, kind, event, flag, now))
            if is_block:
                record["blocked"][event.event_id] = _blocked(event, flag, now)
                self._statement(event.event_id, "model", flag.video_id, flag.lang, flag.reasons, flag.scores,
                                flag.model_version, event.ts, now, reviewer_note=None)  # fmt: skip
        for user_id, record in by_user.items():
            self._store(user_id, record)

    def _statement(self, puid: str, sor_key: str, video_id: str, lang: str, reasons: list[str],
                   scores: dict[str, float], model_version: str, content_ts: float, now: float,
                   reviewer_note: str | None, category: str | None = None) -> None:  # fmt: skip
        """A DSA Art. 17 statement of reasons for a block (the model's: `reviewer_note` None)."""
        cats = [r.split(">=")[0] for r in reasons]
        main = category if category not in (None, "none") else (cats[0] if cats else "none")
        over = ", ".join(f"{c} {scores.get(c, 0.0):.2f} (threshold {r.split('>=')[1]})" for c, r in zip(cats, reasons))
        facts = f"The comment was scored by the automated classifier {model_version}: {over or 'no category over its threshold'}."
        if reviewer_note is not None:
            facts += f" A human reviewer decided to remove it as {main}" + (f": {reviewer_note}" if reviewer_note else ".")
        sor = StatementOfReasons(
            sor_id=f"{puid}:{sor_key}",
            puid=tdb_puid(puid),
            incompatible_content_ground=f"community guidelines: {main}",
            incompatible_content_explanation=f"The comment was removed for {main} content.",
            category=DSA_CATEGORY.get(main, DSA_CATEGORY["none"]),
            content_language=lang.upper(),
            automated_detection="Yes",
            automated_decision="AUTOMATED_DECISION_FULLY" if reviewer_note is None else "AUTOMATED_DECISION_NOT_AUTOMATED",
            application_date=_day(now),
            content_date=_day(content_ts),
            decision_facts=facts[:5000],
            model_version=model_version,
            video_id=video_id,
        )
        self.emit(self.t.statements_of_reasons, sor.puid.encode(), dumps(sor), None)
        metrics.STATEMENTS.labels("model" if reviewer_note is None else "reviewer").inc()

    # --- appeals (an event type on `events`) -----------------------------------------------------------
    def appeal(self, event: Appeal) -> None:
        record = self._load(event.user_id)
        blocked = record["blocked"].get(event.target_event_id)
        pending = [i for i in record["pending"].values() if i["kind"] == "appeal" and i["event_id"] == event.target_event_id]
        if pending and pending[0]["item_id"] == event.event_id:
            return  # a redelivered appeal: already queued
        why = ("no blocked comment of this user with that id within the appeal window" if blocked is None
               else "already appealed" if blocked.get("appealed") or pending else "")  # fmt: skip
        if why:
            self._outcome(event.event_id, event.target_event_id, event.user_id, "not_appealable", why)
            return
        item = ReviewItem(
            item_id=event.event_id, kind="appeal", event_id=event.target_event_id, user_id=event.user_id,
            video_id=blocked["video_id"], text=blocked["text"], lang=blocked["lang"], scores=blocked["scores"],
            sentiment=blocked["sentiment"], reasons=blocked["reasons"], model_action=blocked["model_action"],
            model_version=blocked["model_version"], queued_at=self.clock(), appeal_text=event.text,
        )  # fmt: skip
        self._queue(record, item)
        blocked = record["blocked"][event.target_event_id] = {**blocked, "appealed": True}
        metrics.APPEALS.labels("queued").inc()
        self._store(event.user_id, record)

    def _outcome(self, appeal_id: str, event_id: str, user_id: str, outcome: str, detail: str = "") -> None:
        record = AppealOutcome(appeal_id=appeal_id, event_id=event_id, user_id=user_id, outcome=outcome,
                               decided_at=self.clock(), detail=detail)  # type: ignore[arg-type] # fmt: skip
        self.emit(self.t.appeal_outcomes, user_id.encode(), dumps(record), None)
        metrics.APPEALS.labels(outcome).inc()

    # --- erasure ----------------------------------------------------------------------------------------
    def erase(self, user_id: str) -> None:
        """`user_delete`: the user's pending items leave the queue (tombstones) and their blocks are forgotten."""
        record = self.table.get(user_id)
        if record is None:
            return
        for item_id in record.get("pending", {}):
            self.emit(self.t.review_queue, item_id.encode(), None, None)
            metrics.REVIEW_ERASED.inc()
        self.table.remove(user_id, self._partition(user_id))

    # --- reviewers' decisions (`review-decisions`) -----------------------------------------------------
    def process_decisions(self, messages: Iterable[Any]) -> None:
        """Each valid decision for a pending item is applied; anything else is dead-lettered, never applied."""
        for msg in messages:
            try:
                decision = parse_decision(msg.value, max_bytes=self.s.max_message_bytes)
                if msg.key is not None and msg.key != decision.user_id.encode():
                    raise InvalidMessage("invalid_decision", "the record's key is not its user_id")
                record = self._load(decision.user_id)
                item = record["pending"].get(decision.item_id)
                if item is None:
                    raise InvalidMessage("stale_decision", f"no pending item {decision.item_id!r} for this user")
            except InvalidMessage as err:
                self.dead_letter(msg, err)
                continue
            self._apply(decision, ReviewItem.model_validate(item), record)
            self._store(decision.user_id, record)

    def _apply(self, d: ReviewDecision, item: ReviewItem, record: dict) -> None:
        metrics.REVIEW_DECISIONS.labels(d.decision, d.category).inc()
        metrics.REVIEW_MODEL_AGREEMENT.labels(item.model_action, d.decision).inc()
        if d.decision == "escalate":
            if item.kind != "escalated" and item.kind != "appeal":
                self._queue(record, item.model_copy(update={"kind": "escalated"}))
            return  # stays pending (an appeal stays an appeal: its outcome is still owed)
        self._unqueue(record, item.item_id)
        flag = ModerationFlag(
            event_id=item.event_id, user_id=item.user_id, video_id=item.video_id, lang=item.lang, scores=item.scores,
            sentiment=item.sentiment, action=_ACTION[d.decision],  # type: ignore[arg-type]
            reasons=[d.category] if d.category != "none" else [], model_version=item.model_version,
            decided_by="reviewer", reviewer=d.reviewer, decided_at=d.decided_at,
        )  # fmt: skip
        self.emit(self.t.moderation_flags, item.video_id.encode(), dumps(flag), None)
        metrics.FLAGS.labels(flag.action).inc()
        if item.kind == "appeal":
            upheld = d.decision == "remove"
            self._outcome(item.item_id, item.event_id, item.user_id, "upheld" if upheld else "reversed", d.note)
            if not upheld:
                record["blocked"].pop(item.event_id, None)
            return
        if d.decision == "approve":
            record["blocked"].pop(item.event_id, None)  # a sampled block reversed
            return
        if item.model_action == "block":
            return  # a sampled block confirmed: the model's statement of reasons stands, still appealable
        record["blocked"][item.event_id] = {**{k: getattr(item, k) for k in BLOCKED_FIELDS}, "blocked_at": self.clock()}
        self._statement(item.event_id, d.decision_id, item.video_id, item.lang, item.reasons, item.scores,
                        item.model_version, item.queued_at, self.clock(), reviewer_note=d.note, category=d.category)  # fmt: skip

    # --- queue metrics ----------------------------------------------------------------------------------
    def queue_stats(self, records: Iterable[Any]) -> tuple[int, float]:
        """(pending items, age of the oldest in seconds) over these users' records."""
        count, oldest = 0, None
        for record in records:
            for item in (record or {}).get("pending", {}).values():
                count += 1
                oldest = item["queued_at"] if oldest is None else min(oldest, item["queued_at"])
        return count, 0.0 if oldest is None else max(0.0, self.clock() - oldest)


def _item(item_id: str, kind: str, event: Comment, flag: ModerationFlag, now: float) -> ReviewItem:
    return ReviewItem(
        item_id=item_id, kind=kind, event_id=event.event_id, user_id=event.user_id, video_id=event.video_id,  # type: ignore[arg-type]
        text=event.text, lang=flag.lang, scores=flag.scores, sentiment=flag.sentiment, reasons=flag.reasons,
        model_action=flag.action, model_version=flag.model_version, queued_at=now,
    )  # fmt: skip


def _blocked(event: Comment, flag: ModerationFlag, now: float) -> dict[str, Any]:
    """What an appeal of this block needs to put the comment before a reviewer again."""
    return {"video_id": event.video_id, "text": event.text, "lang": flag.lang, "scores": flag.scores,
            "sentiment": flag.sentiment, "reasons": flag.reasons, "model_action": flag.action,
            "model_version": flag.model_version, "blocked_at": now}  # fmt: skip


def decision_record(item: dict[str, Any], decision: str, category: str, note: str, reviewer: str, now: float) -> bytes:
    """A `review-decisions` value for a queue item (the review page's, and tests'); key: the item's user id."""
    d = ReviewDecision(
        decision_id=f"{item['item_id']}:{decision}:{int(now * 1000)}", item_id=item["item_id"], user_id=item["user_id"],
        decision=decision, category=category, note=note, reviewer=reviewer, decided_at=now,  # type: ignore[arg-type]
    )  # fmt: skip
    return orjson.dumps(d.model_dump(mode="json"))
