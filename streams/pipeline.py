"""What the agents do, as plain Python: validation and DLQ, dedup, user history, erasure, outputs.

Kept free of Faust so it can be unit-tested directly; `streams.app` wires it to topics and tables.
Every method is synchronous: a read-modify-write of a user's record never spans an `await`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from monitoring import metrics
from reelstream.settings import Settings
from streams.schemas import (
    Comment,
    DeadLetter,
    InvalidMessage,
    ModerationFlag,
    RecItem,
    Recommendation,
    UserDelete,
    Watch,
    dumps,
    parse_event,
    parse_video_event,
)


@dataclass(frozen=True)
class Message:
    """One consumed Kafka message, independent of the client library."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None
    handle: Any = None  # the client's own message object (Faust: the event), for `bind`


# emit(topic, key, value, timestamp) -> None. Buffered; flushed before offsets are committed.
Emit = Callable[[str, bytes | None, bytes | None, float | None], None]


class Recommender(Protocol):
    """What the pipeline needs of a recommender (the real ones live in models/recs)."""

    model_version: str

    def observe(self, user_id: str, history: list[dict[str, Any]]) -> None: ...

    def recommend(self, user_id: str, history: list[dict[str, Any]], k: int, exclude: set[str]) -> list[tuple[str, float]]: ...

    def forget_user(self, user_id: str) -> None: ...

    def remove_video(self, video_id: str) -> None: ...


class CommentScorer(Protocol):
    """What the pipeline needs of the comment models (the real ones live in models/text)."""

    model_version: str

    def score(self, texts: list[str], langs: list[str | None]) -> list[Any]: ...


def history_entry(event: Any) -> dict[str, Any]:
    """A compact, JSON-able record of one interaction, enough to recompute confidence from scratch."""
    entry: dict[str, Any] = {"id": event.event_id, "type": event.type, "video": event.video_id, "ts": event.ts}
    if isinstance(event, Watch):
        entry["ratio"] = round(event.ratio, 4)
    elif isinstance(event, Comment):
        entry["sentiment"] = None  # filled in by the moderation agent; None = pending
    return entry


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        users: MutableMapping[str, dict[str, Any]],
        catalog: MutableMapping[str, str],
        recommender: Recommender,
        emit: Emit,
        clock: Callable[[], float] = time.time,
        bind: Callable[[Message], None] = lambda msg: None,
    ) -> None:
        self.s = settings
        self.t = settings.topics
        self.users = users
        self.catalog = catalog
        self.recommender = recommender
        self.emit = emit
        self.clock = clock
        # Called before each message's state changes: Faust writes a table change to the changelog
        # partition of the message being handled, so that partition must be made current.
        self.bind = bind

    # --- dead letters -------------------------------------------------------------------------
    def dead_letter(self, msg: Message, err: InvalidMessage) -> None:
        record = DeadLetter(
            reason=err.reason,
            detail=err.detail,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            raw=base64.b64encode(msg.value or b"").decode("ascii"),
        )
        self.emit(self.t.dlq, msg.key, dumps(record), None)
        metrics.DLQ.labels(err.reason).inc()
        metrics.OUTPUTS.labels("dlq").inc()

    # --- user events ----------------------------------------------------------------------------
    def process_events(self, messages: Iterable[Message]) -> None:
        """One micro-batch of the `events` topic. Recommendations go out once per touched user."""
        touched: dict[str, tuple[str, list[float]]] = {}  # user -> (last event id, input timestamps)
        for msg in messages:
            self.bind(msg)
            try:
                event = parse_event(msg.value, max_bytes=self.s.max_message_bytes, max_text_chars=self.s.max_text_chars)
            except InvalidMessage as err:
                self.dead_letter(msg, err)
                continue
            if isinstance(event, UserDelete):
                self.erase_user(event.user_id)
                touched.pop(event.user_id, None)
                metrics.EVENTS.labels(event.type).inc()
                continue
            record = self.users.get(event.user_id) or {"events": []}
            seen = next((e for e in record["events"] if e["id"] == event.event_id), None)
            if seen is not None:
                # Redelivery or a producer retry: state already has it. Re-serve the user (outputs may
                # repeat) and re-forward a comment whose moderation never completed.
                metrics.DUPLICATES.inc()
                if isinstance(event, Comment) and seen.get("sentiment") is None:
                    self.forward_comment(msg, event)
            else:
                if isinstance(event, Comment):
                    self.forward_comment(msg, event)
                record["events"] = (record["events"] + [history_entry(event)])[-self.s.recs.history_max_events:]
                self.users[event.user_id] = record
                self.recommender.observe(event.user_id, record["events"])
                metrics.EVENTS.labels(event.type).inc()
            last = touched.setdefault(event.user_id, (event.event_id, []))
            touched[event.user_id] = (event.event_id, last[1] + [msg.timestamp])
        self.serve_all(touched)

    def forward_comment(self, msg: Message, event: Comment) -> None:
        """To the moderation agent's topic (same key, so the same partition and worker), keeping the time."""
        self.emit(self.t.comments, msg.key, dumps(event), msg.timestamp)
        metrics.OUTPUTS.labels("comments").inc()

    def serve_all(self, touched: Mapping[str, tuple[str, list[float]]]) -> None:
        if not touched:
            return
        unavailable = {v for v, status in self.catalog.items() if status != "active"}
        for user_id, (source_event_id, stamps) in touched.items():
            self.serve(user_id, source_event_id, stamps, unavailable)

    def serve(self, user_id: str, source_event_id: str, input_timestamps: list[float], unavailable: set[str]) -> None:
        record = self.users.get(user_id)
        history = record["events"] if record else []
        exclude = {e["video"] for e in history} | unavailable
        items = self.recommender.recommend(user_id, history, self.s.recs.top_k, exclude)
        now = self.clock()
        rec = Recommendation(
            user_id=user_id,
            items=[RecItem(video_id=v, score=round(float(s), 6)) for v, s in items],
            model_version=self.recommender.model_version,
            source_event_id=source_event_id,
            generated_at=now,
        )
        self.emit(self.t.recommendations, user_id.encode(), dumps(rec), None)
        metrics.OUTPUTS.labels("recommendations").inc()
        for ts in input_timestamps:
            metrics.LATENCY.labels("recommendations").observe(max(0.0, now - ts))

    def erase_user(self, user_id: str) -> None:
        """Right to erasure: history and dedup entries (the same record), model state, pending output."""
        if user_id in self.users:
            del self.users[user_id]  # a tombstone on the changelog
        self.recommender.forget_user(user_id)
        self.emit(self.t.recommendations, user_id.encode(), None, None)  # tombstone for compacted consumers
        metrics.ERASURES.inc()

    # --- videos -----------------------------------------------------------------------------------
    def process_videos(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            self.bind(msg)
            try:
                event = parse_video_event(msg.value, max_bytes=self.s.max_message_bytes)
            except InvalidMessage as err:
                self.dead_letter(msg, err)
                continue
            metrics.EVENTS.labels(f"video_{event.type}").inc()
            status = "active" if event.type == "upload" else "removed" if event.type == "remove" else "blocked"
            if self.catalog.get(event.video_id) in ("removed", "blocked") and status == "active":
                continue  # a re-upload does not lift a removal or a block
            self.catalog[event.video_id] = status
            if status != "active":
                self.recommender.remove_video(event.video_id)

    # --- comments ---------------------------------------------------------------------------------
    def comments_batch(self, messages: Iterable[Message]) -> list[tuple[Message, Comment]]:
        """Comments still owed a moderation result (erased users' comments are dropped here)."""
        out = []
        for msg in messages:
            event = Comment.model_validate_json(msg.value or b"")
            record = self.users.get(event.user_id)
            if record and any(e["id"] == event.event_id for e in record["events"]):
                out.append((msg, event))
            else:
                metrics.COMMENTS_ERASED.inc()
        return out

    def apply_comment_scores(self, batch: list[tuple[Message, Comment]], results: list[Any], model_version: str) -> None:
        """Emit flags and feed sentiment back into the user's history (idempotent: it sets, never adds)."""
        touched: dict[str, tuple[str, list[float]]] = {}
        for (msg, event), res in zip(batch, results, strict=True):
            self.bind(msg)
            record = self.users.get(event.user_id)
            entry = next((e for e in record["events"] if e["id"] == event.event_id), None) if record else None
            if entry is None:
                metrics.COMMENTS_ERASED.inc()  # the user was erased while the comment was being scored
                continue
            flag = ModerationFlag(
                event_id=event.event_id,
                user_id=event.user_id,
                video_id=event.video_id,
                lang=res.lang,
                scores=res.scores,
                sentiment=res.sentiment,
                action=res.action,
                reasons=res.reasons,
                model_version=model_version,
            )
            self.emit(self.t.moderation_flags, event.video_id.encode(), dumps(flag), None)
            metrics.OUTPUTS.labels("moderation_flags").inc()
            metrics.FLAGS.labels(res.action).inc()
            for reason in res.reasons:
                metrics.FLAG_REASONS.labels(reason.split(">=")[0]).inc()
            metrics.LATENCY.labels("moderation_flags").observe(max(0.0, self.clock() - msg.timestamp))
            entry["sentiment"] = [round(res.sentiment[k], 4) for k in ("negative", "neutral", "positive")]
            self.users[event.user_id] = record
            self.recommender.observe(event.user_id, record["events"])
            touched[event.user_id] = (event.event_id, touched.get(event.user_id, ("", []))[1] + [msg.timestamp])
        self.serve_all(touched)
