"""The trainer role (`reelstream trainer`): the slow speed of two-speed ALS, inside the deployment.

It reads the state the workers already keep, the users table's changelog (every user's stored history; on
real Kafka a compacted topic, so a restarted trainer re-reads all of it) and the catalog's, and re-fits ALS
(implicit, warm-started) when the refit policy says so (models/recs/refit.py, the same code the in-process
evaluation runs). A fit is published without stopping anyone:
1. its item vectors to `item-vectors`, marked as a batch model's: every worker's replica serves them from
   its next micro-batch, and its item side stops re-solving those videos until the next fit
   (models/recs/item_side.py), so nothing in an older model's space overwrites them;
2. then, once those are delivered, the version record on `models` (one partition, compacted): its version,
   the offsets its vectors end at (a worker serves the version once its replica has read that far: the
   version record may be read first, and users re-served then would be solved against the old vectors),
   which workers stamp on every output from then on, what it was fitted on, and its users' Gram X^T X, the
   item side's Gram for the new videos it solves in between. A user's factor is not shipped: a worker
   re-solves it from the user's full history against the new item vectors at their next event, which is the
   new model's own user step.

One trainer at a time: every trainer process joins the consumer group `<app_id>-trainer` on the one-partition
`models` topic, and only the member assigned that partition fits and publishes; the others read the
changelogs and wait (a standby takes over within the session timeout). Two active trainers would publish two
models' vectors into the same replicas. A partitioned scheme was not chosen: ALS item factors need every
user. Crash: a restarted trainer re-reads the changelogs and publishes a fresh fit (cold-started) as soon as
the policy allows; workers keep serving the last version meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from contracts.history import EVENT_ID, TS, Row
from contracts.models import MODEL_KEY, SCHEMA_VERSION, vector_record
from models.recs.als import StreamingALS
from models.recs.refit import Refitter
from models.recs.solve import gram
from monitoring import metrics
from streams import steps
from streams.catalog import is_available
from streams.output import OutputProducer
from streams.security import client_config
from streams.settings import Settings
from streams.topics import CATALOG_TABLE, USERS_TABLE, changelog

log = logging.getLogger(__name__)
READ_BATCH = 2000  # changelog records per read


class Trainer:
    """What the trainer holds (histories and catalog from the changelogs) and does (refit, publish)."""

    def __init__(self, settings: Settings, emit: Callable[..., None], flush: Callable[[], None]) -> None:
        self.s = settings
        self.emit = emit
        self.flush = flush
        self.histories: dict[str, list[Row]] = {}
        self.catalog: dict[str, Any] = {}
        self.interactions = 0
        self.refitter = Refitter(settings.recs)

    def apply_user(self, key: bytes | None, value: bytes | None) -> None:
        """One users-changelog record: the user's full stored history, or a tombstone (erasure)."""
        if key is None:
            return
        user = orjson.loads(key)
        old = self.histories.pop(user, [])
        rows = orjson.loads(value)["events"] if value is not None else []
        if rows:
            self.histories[user] = rows
        old_ids, new_ids = {r[EVENT_ID] for r in old}, {r[EVENT_ID] for r in rows}
        self.interactions += len(rows) - len(old)
        self.refitter.note(len(new_ids ^ old_ids), max((r[TS] for r in rows), default=None))
        metrics.TRAINER_INTERACTIONS.set(self.interactions)

    def apply_catalog(self, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            self.catalog[orjson.loads(key)] = None if value is None else orjson.loads(value)

    def due(self) -> bool:
        return self.refitter.due(self.interactions)

    def refit(self) -> StreamingALS:
        """Fit and publish a new version: vectors first, the version record once they are delivered. If
        publishing fails, the next loop fits and publishes again."""
        started = time.perf_counter()
        # In user-id order: the fit's rows, and so its random start, do not depend on the order the changelog
        # was read in; the same stored state fits the same model (bench chaos compares two runs' refits).
        model = self.refitter.fit(dict(sorted(self.histories.items())))
        try:
            self._publish(model)
        except Exception:
            self.refitter.last = None  # not published: due again at once (warm-started from this fit)
            self.refitter.note(1)
            raise
        metrics.TRAINER_REFITS.inc()
        metrics.TRAINER_FIT_SECONDS.observe(time.perf_counter() - started)
        metrics.TRAINER_MODEL.info({"model_version": model.model_version})
        return model

    def _publish(self, model: StreamingALS) -> None:
        t, version = self.s.topics, model.model_version
        published = 0
        ends: dict[int, int] = {}  # per item-vectors partition, just past the last vector delivered

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

        for video_id, vector in zip(model.item_ids, model.item_vectors()):
            if is_available(self.catalog.get(video_id)):
                self.emit(t.item_vectors, orjson.dumps(video_id), orjson.dumps(vector_record(vector, version, batch=True)),
                          on_delivery=delivered)  # fmt: skip
                published += 1
        self.flush()
        mark = self.refitter.last
        assert mark is not None
        record = {
            "schema_version": SCHEMA_VERSION,
            "model_version": version,
            "fitted_at": time.time(),
            "users": mark.users,
            "videos": published,
            "interactions": mark.interactions,
            "until_ts": mark.until_ts,
            "fit_seconds": mark.seconds,
            "factors": self.s.recs.factors,
            "gram": gram(model.user_factors).ravel().tolist(),
            "item_vectors_end": {str(p): end for p, end in sorted(ends.items())},
        }
        self.emit(t.models, orjson.dumps(MODEL_KEY), orjson.dumps(record), None, 0)
        self.flush()
        log.warning(
            "trainer: published %s (%d users, %d videos, %d interactions, fit %.2f s)",
            version, mark.users, published, mark.interactions, mark.seconds,
        )  # fmt: skip


def _caught_up(consumer: Any) -> bool:
    """Every assigned partition read to the end the broker reported in its latest fetch response."""
    from confluent_kafka import OFFSET_INVALID

    for tp in consumer.position(consumer.assignment()):
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:  # no fetch response yet
            return False
        if (tp.offset if tp.offset != OFFSET_INVALID else low) < high:
            return False
    return True


def run_trainer(settings: Settings, stop: threading.Event | None = None) -> None:
    """The trainer process's loop: read the changelogs, hold the lease, refit when due, serve /metrics."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
    from prometheus_client import start_http_server

    stop = stop or threading.Event()
    try:
        start_http_server(settings.web_port, addr=settings.web_host, registry=metrics.REGISTRY)
    except OSError as exc:  # e.g. a worker on this host already serves the default port
        raise SystemExit(
            f"trainer: cannot serve /metrics on {settings.web_host}:{settings.web_port} ({exc.strerror}); "
            "set REELSTREAM_WEB_PORT to a free port"
        ) from exc
    output = OutputProducer(
        settings.bootstrap_servers, extra={"compression.type": settings.output_compression}, security=settings.security
    )
    trainer = Trainer(settings, output.emit, output.flush_blocking)
    common = client_config(settings.bootstrap_servers, settings.security, **{
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.heartbeat_interval_s * 1000),
        "max.poll.interval.ms": 1_800_000,  # a refit of a large model holds the loop for minutes
    })  # fmt: skip
    users_topic = changelog(settings, USERS_TABLE)
    catalog_topic = changelog(settings, CATALOG_TABLE)
    data = Consumer({  # assign(): never joins its group
        **common, "group.id": f"{settings.app_id}-trainer-reader", "fetch.wait.max.ms": settings.fetch_max_wait_ms,
    })  # fmt: skip
    data.assign(
        [TopicPartition(users_topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
        + [TopicPartition(catalog_topic, p, OFFSET_BEGINNING) for p in range(settings.videos_partitions)]
    )
    active = threading.Event()

    def on_assign(consumer: Any, partitions: list[Any]) -> None:
        if partitions:
            active.set()
            log.warning("trainer: lease acquired, this trainer fits and publishes")

    def on_revoke(consumer: Any, partitions: list[Any]) -> None:
        active.clear()
        log.warning("trainer: lease lost, standing by")

    lease = Consumer({**common, "group.id": f"{settings.app_id}-trainer"})
    lease.subscribe([settings.topics.models], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    offsets = {p: 0 for p in range(settings.partitions)}
    try:
        while not stop.is_set():
            # Return as soon as something arrived (consume() alone waits out its timeout for a full batch).
            first = data.poll(0.05)
            msgs = [] if first is None else [first, *data.consume(num_messages=READ_BATCH - 1, timeout=0)]
            for msg in msgs:
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.error("trainer: changelog read error: %s", msg.error())
                    continue
                try:
                    if msg.topic() == users_topic:
                        trainer.apply_user(msg.key(), msg.value())
                    else:
                        trainer.apply_catalog(msg.key(), msg.value())
                except (ValueError, TypeError, KeyError, IndexError) as exc:  # never applied, counted
                    log.error("trainer: %s[%d]@%d not applied: %r", msg.topic(), msg.partition(), msg.offset(), exc)
                    metrics.DLQ.labels("invalid_changelog").inc()
                if msg.topic() == users_topic:
                    offsets[msg.partition()] = msg.offset() + 1
            lease.poll(0)  # group membership; the records themselves are not needed
            metrics.TRAINER_ACTIVE.set(active.is_set())
            # A full read batch, or a partition behind its end, means there is more to read (a restart catching
            # up): fit on all of it, not on each growing prefix.
            due = active.is_set() and len(msgs) < READ_BATCH and trainer.due() and _caught_up(data)
            # Busy before positions: whoever sees the positions caught up also sees whether a fit is due.
            metrics.TRAINER_BUSY.set(due)
            for p, offset in offsets.items():
                metrics.TRAINER_OFFSET.labels(str(p)).set(offset)
            if due:
                try:
                    trainer.refit()
                except Exception:  # noqa: BLE001 - logged; the next loop tries again on what it has read
                    log.exception("trainer: refit failed")
                    metrics.TASK_ERRORS.labels(steps.REFIT).inc()
                    stop.wait(1.0)
                metrics.TRAINER_BUSY.set(0)
    finally:
        lease.close()
        data.close()
        output.flush_blocking(10)
