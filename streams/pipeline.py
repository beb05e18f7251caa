"""What the agents do, as plain Python: validation and DLQ, dedup, user history, erasure, outputs.

Kept free of Faust so it can be unit-tested directly; `streams.app` wires it to topics and tables.
Every method is synchronous: a read-modify-write of a user's record never spans an `await`.

A user's record is `{"events": [row, ...]}` with one stored `contracts.history.HistoryRow` (a list) per
interaction. The same rows are the event_id dedup window and the full history the user's factor is
recomputed from. Rows are kept in time order (a late event is inserted where it belongs) and a stored row
is never edited in place (a changed row is a new list): models.recs.confidence.FlooredPrefixCache relies on
both.
"""

from __future__ import annotations

import base64
import bisect
import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from contracts.events import (
    EVENT_TYPES,
    Appeal,
    Comment,
    DeadLetter,
    InvalidMessage,
    ModerationFlag,
    UserDelete,
    dumps,
    parse_event,
    parse_video_event,
)
from contracts.history import EVENT_ID, SENTIMENT, TIME_ORDER, HistoryRow, Row, row_with_sentiment
from contracts.models import pack_factor
from models.recs.arms import ListOutcomes
from models.recs.base import Recommender, ServeRequest
from models.recs.exploration import REASON as EXPLORE
from monitoring import metrics
from streams.catalog import ACTIVE, FINAL, STATUS_OF, inactive_videos
from streams.settings import Settings
from streams.topics import partition_for

log = logging.getLogger(__name__)
# Original bytes kept in a dead letter: base64 (4/3) plus the record fits librdkafka's and Kafka's 1 MB default.
DLQ_RAW_MAX_BYTES = 512 * 1024


class Message(NamedTuple):
    """One consumed Kafka message, independent of the client library (a tuple: one is built per event)."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None
    handle: Any = None  # the client's own message object (Faust: the event), for `bind`


class UserStore(Protocol):
    """What the pipeline needs of the users table: reads, and writes that name their changelog partition."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def put(self, key: str, value: Any, partition: int) -> None: ...

    def remove(self, key: str, partition: int) -> None: ...


class MappingStore:
    """A plain mapping as a UserStore (tests, Faust-free replays): the partition has nowhere to go."""

    def __init__(self, data: MutableMapping[str, Any]) -> None:
        self.data = data
        self.get = data.get

    def put(self, key: str, value: Any, partition: int) -> None:
        self.data[key] = value

    def remove(self, key: str, partition: int) -> None:
        self.data.pop(key, None)


def _as_list(factor: Any) -> list[float]:
    return factor.tolist() if hasattr(factor, "tolist") else list(factor)


def user_store(users: Any) -> UserStore:
    return users if hasattr(users, "put") else MappingStore(users)


# emit(topic, key, value, timestamp[, partition]) -> None. Buffered; flushed before offsets are committed.
Emit = Callable[..., None]


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


@dataclass
class _Touched:
    """A user's state while a batch is applied: loaded once, written once."""

    rows: list[Row]
    by_id: dict[str, Row]
    msg: Message | None = None
    new: list[Row] = field(default_factory=list)
    resent: set[str] = field(default_factory=set)  # videos of redelivered events: the item side is told again
    source_event_id: str = ""
    stamps: list[float] = field(default_factory=list)
    partition: int = 0  # of the user's events, when no message of theirs is in the batch (a refresh)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        users: UserStore | MutableMapping[str, dict[str, Any]],
        catalog: MutableMapping[str, str],
        recommender: Recommender,
        emit: Emit,
        clock: Callable[[], float] = time.time,
        bind: Callable[[Message], None] = lambda msg: None,
    ) -> None:
        self.s = settings
        self.t = settings.topics
        self.users = user_store(users)
        self.catalog = catalog
        self.recommender = recommender
        self.emit = emit
        self.clock = clock
        # Called before a catalog change is written: Faust writes a table change to the changelog partition
        # of the message being handled, so that message must be made current (users writes name theirs).
        self.bind = bind
        self._events = {t: metrics.EVENTS.labels(t) for t in EVENT_TYPES}
        self._out = {o: metrics.OUTPUTS.labels(o) for o in ("recommendations", "moderation_flags", "dlq", "comments")}
        self._rec_latency = metrics.LATENCY.labels("recommendations")
        # A/B arms: each user's latest list until their next event says whether it was taken up.
        self.outcomes = ListOutcomes() if settings.recs.arms else None
        # The moderation workflow (streams/review.py), set by the app: queue, appeals, erasure of pending items.
        self.review: Any = None

    # --- dead letters -------------------------------------------------------------------------
    def dead_letter(self, msg: Message, err: InvalidMessage) -> None:
        raw, detail = msg.value or b"", err.detail
        if len(raw) > DLQ_RAW_MAX_BYTES:
            # Base64 of a message near the input cap is larger than the producer (and Kafka) accept: the
            # record would raise in emit and take its whole batch down. The full bytes stay at the offset.
            detail = f"{detail} (raw truncated to {DLQ_RAW_MAX_BYTES} of {len(raw)} bytes)"
            raw = raw[:DLQ_RAW_MAX_BYTES]
        record = DeadLetter(
            reason=err.reason,
            detail=detail,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            raw=base64.b64encode(raw).decode("ascii"),
        )
        self.emit(self.t.dlq, msg.key, dumps(record), None)
        metrics.DLQ.labels(err.reason).inc()
        self._out["dlq"].inc()

    # --- batches that fail ------------------------------------------------------------------------
    async def run_batch(self, apply: Callable[[list[Message]], Any], messages: list[Message], step: str = "-") -> None:
        """Apply a batch; if it raises, apply its messages one by one and dead-letter those that still fail.

        Faust acks a batch's events even when the agent raises, so an exception must never escape with
        messages unaccounted for. Re-applying is safe: every state update is idempotent (event_id dedup).
        `step`: the agent's step id (streams.steps), named in the log lines.
        """
        try:
            await _maybe_await(apply(messages))
        except Exception:  # noqa: BLE001 - anything unexpected; each message is retried alone below
            log.exception("step %s: batch of %d failed; retrying one by one", step, len(messages))
            for msg in messages:
                try:
                    await _maybe_await(apply([msg]))
                except Exception as exc:  # noqa: BLE001
                    log.exception("step %s: message %s[%d]@%d failed", step, msg.topic, msg.partition, msg.offset)
                    self.dead_letter(msg, InvalidMessage("processing_error", f"{type(exc).__name__}: {exc}"))

    # --- user events ----------------------------------------------------------------------------
    def process_events(self, messages: Iterable[Message]) -> None:
        """One micro-batch of `events`: each touched user's record is written once and served once."""
        touched: dict[str, _Touched] = {}
        counts: Counter[str] = Counter()  # metrics once per batch, not a locked increment per event
        for msg in messages:
            try:
                event = parse_event(msg.value, max_bytes=self.s.max_message_bytes, max_text_chars=self.s.max_text_chars)
            except InvalidMessage as err:
                self.dead_letter(msg, err)
                continue
            user = event.user_id
            if isinstance(event, UserDelete):
                counts[event.type] += 1
                touched.pop(user, None)  # pending output of the batch goes too
                self.erase_user(user, msg.partition)
                continue
            if isinstance(event, Appeal):  # not an interaction: the review workflow's, never the history's
                counts[event.type] += 1
                if self.review is not None:
                    self.review.appeal(event)
                continue
            state = touched.get(user)
            if state is None:
                record = self.users.get(user)
                # A copy of the list: the table hands out its stored object, and rows appended to it by a
                # batch that then fails would look like duplicates on retry and never reach the changelog.
                rows = list(record["events"]) if record else []
                state = touched[user] = _Touched(rows, {r[EVENT_ID]: r for r in rows})
            state.msg = msg
            seen = state.by_id.get(event.event_id)
            if seen is not None:
                # Redelivery or a producer retry: state already has it. The user is served again (outputs
                # may repeat) and a comment whose moderation never completed is forwarded again.
                metrics.DUPLICATES.inc()
                if isinstance(event, Comment) and seen[SENTIMENT] is None:
                    self.forward_comment(msg, event)
                # Its users-table write may have been acknowledged and its item message not, before a crash:
                # the item side gets the video's confidence again (idempotent there).
                state.resent.add(event.video_id)
            else:
                counts[event.type] += 1
                row = HistoryRow.from_event(event).stored()
                if state.rows and TIME_ORDER(row) < TIME_ORDER(state.rows[-1]):
                    bisect.insort(state.rows, row, key=TIME_ORDER)  # a late event
                else:
                    state.rows.append(row)
                state.by_id[row[EVENT_ID]] = row
                state.new.append(row)
                if self.outcomes is not None and len(state.new) == 1:
                    self._close_list(user, event.video_id, event.type)
                if isinstance(event, Comment):
                    self.forward_comment(msg, event)
            state.source_event_id = event.event_id
            state.stamps.append(msg.timestamp)
        for user, state in touched.items():
            if state.new:
                state.rows = state.rows[-self.s.recs.history_max_events:]
                self.users.put(user, {"events": state.rows}, state.msg.partition)
            if state.new or state.resent:
                self.recommender.learn(user, state.rows, state.new, changed=state.resent, partition=state.msg.partition)
        self.serve_all(touched)
        for kind, n in counts.items():  # last: a batch that fails is counted by its one-by-one retry
            self._events[kind].inc(n)

    def forward_comment(self, msg: Message, event: Comment) -> None:
        """To the moderation agent's topic (same key, so the same partition and worker), keeping the time."""
        self.emit(self.t.comments, msg.key, dumps(event), msg.timestamp)
        self._out["comments"].inc()

    def serve_all(self, touched: dict[str, _Touched]) -> None:
        if not touched:
            return
        # streams.tables.CatalogTable keeps this set; a plain mapping (tests, replays) is scanned.
        unavailable = getattr(self.catalog, "inactive", None)
        if unavailable is None:
            unavailable = inactive_videos(self.catalog)
        requests = [
            ServeRequest(user_id, state.rows, state.msg.partition if state.msg is not None else state.partition)
            for user_id, state in touched.items()
        ]
        served = self.recommender.recommend_many(requests, self.s.recs.top_k, unavailable)
        now = self.clock()
        for (user_id, state), (items, version, because, reason, explored, arm, _) in zip(
            touched.items(), served, strict=True
        ):
            rec = {
                "user_id": user_id,
                "items": [
                    {"video_id": v, "score": round(float(s), 6), "reason": EXPLORE if v in explored else reason,
                     "because": why}
                    for (v, s), why in zip(items, because, strict=True)
                ],
                "model_version": version,
                "source_event_id": state.source_event_id,
                "generated_at": now,
            }
            if arm is not None:
                rec["arm"] = arm
                if self.outcomes is not None:
                    self.outcomes.served(user_id, arm, (v for v, _ in items))
            self.emit(self.t.recommendations, user_id.encode(), orjson.dumps(rec), None)
            self._out["recommendations"].inc()
            for ts in state.stamps:
                self._rec_latency.observe(max(0.0, now - ts))
        self.send_item_messages()

    def _close_list(self, user_id: str, video_id: str, type_: str) -> None:
        """The user's first new event of a batch closes the list they had: counted for its arm, a hit if it
        watched or liked one of its videos (the online HR@k; `reelstream report ab` from the topics)."""
        outcome = self.outcomes.next_event(user_id, video_id, type_)  # type: ignore[union-attr]
        if outcome is not None:
            arm, engaged = outcome
            metrics.AB_LISTS.labels(arm).inc()
            if engaged is not None:
                metrics.AB_HITS.labels(arm, engaged).inc()

    def refresh(self, partitions: Mapping[str, int]) -> int:
        """Serve users (user_id -> their `events` partition) again with the current model, events or not:
        after a new batch version their lists would otherwise stay those of the model they last acted under
        (a user back tomorrow would get yesterday's list). Their latest event stays the source. Returns how
        many were served."""
        touched = {}
        for user_id, partition in partitions.items():
            record = self.users.get(user_id)
            rows = record["events"] if record else None
            if rows:
                touched[user_id] = _Touched(rows, {}, source_event_id=rows[-1][EVENT_ID], partition=partition)
        self.serve_all(touched)
        metrics.REFRESHED.inc(len(touched))
        return len(touched)

    def restore(self, partitions: Mapping[str, int]) -> None:
        """Users (user_id -> their `events` partition) of partitions this worker just took on: their factors
        rejoin the partial Grams from their stored histories (`Recommender.restore_users`), unserved."""
        requests = []
        for user_id, partition in partitions.items():
            record = self.users.get(user_id)
            if record and record["events"]:
                requests.append(ServeRequest(user_id, record["events"], partition))
        self.recommender.restore_users(requests)
        metrics.RESTORED.inc(len(requests))

    def send_item_messages(self) -> None:
        """New (user factor, confidence) per video, to the item side on the video_id-partitioned stream.

        One message per destination partition (the partition of each video_id key) instead of one per
        video: a Faust message costs ~0.1 ms of CPU, which doubled a worker's cost per event (measured).
        """
        by_partition: dict[int, list[list]] = {}
        pack = pack_factor if self.s.item_factors == "packed" else _as_list
        for video, user, factor, confidence in self.recommender.take_item_messages():
            item = [video, user, None if factor is None else pack(factor), confidence]
            by_partition.setdefault(partition_for(video.encode(), self.s.partitions), []).append(item)
        for partition, items in by_partition.items():
            self.emit(self.t.interactions_by_video, None, orjson.dumps(items), None, partition)

    def erase_user(self, user_id: str, partition: int) -> None:
        """Right to erasure: history and dedup entries (the same record), model state, pending output."""
        record = self.users.get(user_id)
        if record is not None:
            self.users.remove(user_id, partition)  # a tombstone on the changelog
        self.recommender.forget_user(user_id, record["events"] if record else [])
        if self.outcomes is not None:
            self.outcomes.forget(user_id)
        self.send_item_messages()
        self.emit(self.t.recommendations, user_id.encode(), None, None)  # tombstone for compacted consumers
        if self.review is not None:
            self.review.erase(user_id)  # pending review items leave the queue
        metrics.ERASURES.inc()

    # --- videos -----------------------------------------------------------------------------------
    def process_videos(self, messages: Iterable[Message]) -> None:
        for msg in messages:
            try:
                event = parse_video_event(msg.value, max_bytes=self.s.max_message_bytes)
            except InvalidMessage as err:
                self.dead_letter(msg, err)
                continue
            metrics.EVENTS.labels(f"video_{event.type}").inc()
            status = STATUS_OF[event.type]
            if status == ACTIVE and self.catalog.get(event.video_id) in FINAL:
                continue  # a re-upload does not lift a removal or a block
            self.bind(msg)
            self.catalog[event.video_id] = status
            if status == ACTIVE:  # with its time (the catalog tells the uploads it reads from its changelog)
                self.recommender.add_video(event.video_id, event.ts)
            if status != ACTIVE:
                self.recommender.remove_video(event.video_id)
                # Every worker's index replica drops it (the item-vectors topic is compacted).
                self.emit(self.t.item_vectors, orjson.dumps(event.video_id), None, None)

    # --- comments ---------------------------------------------------------------------------------
    def _pending_row(self, user_id: str, event_id: str) -> tuple[dict | None, Row | None]:
        record = self.users.get(user_id)
        row = next((r for r in record["events"] if r[EVENT_ID] == event_id), None) if record else None
        return record, row

    def comments_batch(self, messages: Iterable[Message]) -> list[tuple[Message, Comment]]:
        """Comments still owed a moderation result (erased users' comments are dropped here). The topic is
        input like `events`: a record that is not a comment event is dead-lettered with its reason (it used
        to fail its batch and land as `processing_error`)."""
        out = []
        for msg in messages:
            try:
                event = parse_event(msg.value, max_bytes=self.s.max_message_bytes, max_text_chars=self.s.max_text_chars)
                if not isinstance(event, Comment):
                    raise InvalidMessage("unknown_type", f"a {event.type} event on the comments topic")
            except InvalidMessage as err:
                self.dead_letter(msg, err)
                continue
            if self._pending_row(event.user_id, event.event_id)[1] is not None:
                out.append((msg, event))
            else:
                metrics.COMMENTS_ERASED.inc()
        return out

    def apply_comment_scores(self, batch: list[tuple[Message, Comment]], results: list[Any], model_version: str) -> None:
        """Emit flags and feed sentiment back into the user's history (idempotent: it sets, never adds)."""
        touched: dict[str, _Touched] = {}
        scored: list[tuple[Comment, ModerationFlag]] = []
        for (msg, event), res in zip(batch, results, strict=True):
            record, row = self._pending_row(event.user_id, event.event_id)
            if row is None:
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
                abstained=res.abstained,
            )
            self.emit(self.t.moderation_flags, event.video_id.encode(), dumps(flag), None)
            scored.append((event, flag))
            self._out["moderation_flags"].inc()
            metrics.FLAGS.labels(res.action).inc()
            for reason in res.reasons:
                metrics.FLAG_CATEGORIES.labels(reason.split(">=")[0]).inc()
            metrics.LATENCY.labels("moderation_flags").observe(max(0.0, self.clock() - msg.timestamp))
            sentiment = [round(res.sentiment[k], 4) for k in ("negative", "neutral", "positive")]
            rows = record["events"]
            rows[rows.index(row)] = row_with_sentiment(row, sentiment)
            self.users.put(event.user_id, record, msg.partition)
            self.recommender.learn(
                event.user_id, record["events"], [], changed=[event.video_id], partition=msg.partition
            )
            state = touched.setdefault(event.user_id, _Touched(record["events"], {}))
            state.msg = msg  # comments are co-partitioned with events: the same partition number
            state.source_event_id = event.event_id
            state.stamps.append(msg.timestamp)
        if self.review is not None:
            self.review.flagged(scored)
        self.serve_all(touched)
