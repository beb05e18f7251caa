"""The Faust application: topics, tables and agents, wired from Settings around `Pipeline`.

Topics are pre-created by the broker (or by ops on real Kafka): Faust never declares topics here, so
the same worker runs unchanged against librdkafka's mock cluster and a real Kafka cluster.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import numpy as np
import orjson
from faust.sensors.monitor import Monitor
from faust.streams import _current_event
from prometheus_client import CONTENT_TYPE_LATEST

from contracts.events import InvalidMessage
from contracts.history import check_user_record
from contracts.models import (
    MODEL_KEY,
    ModelRecord,
    check_gram,
    parse_item_vector,
    parse_model_record,
    parse_vector_record,
    vector_record,
)
from contracts.review import check_review_record
from models.recs.base import Recommender
from models.text.base import CommentScorer
from monitoring import metrics
from monitoring.consumer import LAG
from streams import steps, transport
from streams.batching import micro_batches, still_current
from streams.catalog import check_catalog_record
from streams.items import ItemSide, ItemStateTable, TopicReplica, state_check
from streams.output import OutputProducer
from streams.pipeline import Message, Pipeline
from streams.review import ReviewDesk
from streams.security import faust_credentials
from streams.settings import Settings
from streams.tables import CatalogTable, OutputTable
from streams.topics import CATALOG_TABLE, ITEM_STATE_TABLE, REVIEWS_TABLE, TABLES, USERS_TABLE, changelog

log = logging.getLogger(__name__)


def _message(event: faust.types.EventT) -> Message:
    m = event.message
    LAG.seen(m.topic, m.partition, m.timestamp)
    return Message(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, event)


def _retried_next_tick(task: str):
    """A periodic task that fails is logged, counted and run again at its next tick: a timer that raises
    would otherwise crash the whole worker (Faust)."""

    def wrap(fun):
        @functools.wraps(fun)
        async def run() -> None:
            try:
                await fun()
            except Exception:  # noqa: BLE001 - any failure; the next tick retries
                log.exception("step %s: periodic task failed", task)
                metrics.TASK_ERRORS.labels(task).inc()

        return run

    return wrap


def _item_vector_check(factors: int, max_norm: float):
    """What an item-vectors record must be to reach the index (streams.tables.ValidatedChangelog)."""

    def check(key: Any, value: Any) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("key is not a video id")
        if value is not None:
            parse_item_vector(value, factors, max_norm)

    return check


def _gram_check(factors: int, partitions: int):
    def check(key: Any, value: Any) -> None:
        if type(key) is not int or not 0 <= key < partitions:
            raise ValueError(f"key is not an events partition (0..{partitions - 1})")
        if value is not None:
            check_gram(value, factors)

    return check


def _model_check(factors: int):
    def check(key: Any, value: Any) -> None:
        if key != MODEL_KEY:
            raise ValueError(f"key is not {MODEL_KEY!r}")
        if value is not None:
            parse_model_record(value, factors)

    return check


def _apply_vectors(recommender: Recommender, items: ItemSide):
    """item-vectors records: served at once; the item side leaves a batch fit's videos alone until the next."""

    def apply(latest: dict[str, Any]) -> None:
        ids, vectors = [], []
        for video_id, value in latest.items():
            if value is None:
                recommender.remove_video(video_id)
                continue
            vector, batch = parse_vector_record(value)  # type: ignore[misc] - checked by the replica's validate
            ids.append(video_id)
            vectors.append(vector)
            items.own(video_id, batch)
        if ids:
            recommender.upsert_items(ids, np.asarray(vectors, dtype=np.float32))

    return apply


def _apply_models(recommender: Recommender, items: ItemSide, factors: int, on_version: Any,
                  vectors_reached: Callable[[], dict[int, int]]):  # fmt: skip
    """`models` records: a new batch version is stamped on outputs and its users' Gram feeds the item side.
    A version waits until the item-vectors replica has read its fit's vectors (`vectors_end`): the version
    record can be read first (another partition, another fetch, the replicas' coalescing), and its users
    re-served then would be solved against the previous vectors. Returns (apply, vectors_applied)."""
    waiting: list[ModelRecord] = []

    def apply(latest: dict[str, Any]) -> None:
        value = latest.get(MODEL_KEY)
        if value is None:
            return
        waiting[:] = [parse_model_record(value, factors)]  # checked before: the replica's validate
        vectors_applied()
        if waiting:
            log.info("version %s waits for its vectors %s (read: %s)", waiting[0].model_version,
                     dict(waiting[0].vectors_end), vectors_reached())  # fmt: skip

    def vectors_applied() -> None:
        if not waiting or any(vectors_reached().get(p, 0) < end for p, end in waiting[0].vectors_end):
            return
        record = waiting.pop()
        if record.model_version != recommender.model_version:
            recommender.use_model(record.model_version, np.asarray(record.gram, dtype=np.float64).reshape(factors, factors))
            items.new_model(record.model_version)
            on_version()

    return apply, vectors_applied


def _apply_grams(recommender: Recommender, factors: int):
    def apply(latest: dict[int, list[float] | None]) -> None:
        for partition, flat in latest.items():
            partial = None if flat is None else np.asarray(flat, dtype=np.float64).reshape(factors, factors)
            recommender.set_partial(int(partition), partial)

    return apply


def _bind(msg: Message) -> None:
    """Make msg's event Faust's current event, as per-event iteration would (micro_batches does not)."""
    _current_event.set(weakref.ref(msg.handle))


class _PerEventQuietMonitor(Monitor):
    """Faust's Monitor without its per-event bookkeeping (our own metrics count events, monitoring/): the
    four hooks below ran for every message, ~8 us of a worker's CPU per event (measured, no-op agent)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


def _store_of(settings: Settings, table: str) -> dict[str, Any]:
    """A partitioned table's store (users, item state): RocksDB through rocksdict (a maintained wheel with RocksDB inside; Faust's
    other driver, python-rocksdb, needs a system librocksdb and is unmaintained), one database per changelog
    partition under `data_dir`; its block cache and memtables sized so a worker's share stays bounded."""
    if settings.store == "memory":
        return {}
    mib = 1024 * 1024
    per_partition = max(1, settings.store_block_cache_mib // settings.partitions)
    # "rocksdb:users", not "rocksdb://": a yarl URL with neither host nor path is falsy, and Faust then
    # silently takes the app's store (memory); this path is the file name prefix under data_dir.
    return {"store": f"rocksdb:{table}", "options": {
        "driver": "rocksdict", "block_cache_size": per_partition * mib, "write_buffer_size": 8 * mib,
        "max_write_buffer_number": 2, "target_file_size_base": 32 * mib,
    }}  # fmt: skip


def create_app(
    settings: Settings, recommender: Recommender, scorer: CommentScorer, output: OutputProducer | None = None
) -> faust.App:
    """The app. `output` defaults to a librdkafka producer on the configured brokers (tests pass a sink)."""
    t = settings.topics
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings.security),  # None for PLAINTEXT (streams/security.py)
        store="memory://",  # every table but users (_store_of) is rebuilt from its changelog topic on start
        datadir=settings.data_dir,
        topic_allow_declare=False,
        topic_disable_leader=False,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        # Only /metrics (below) and Faust's {"status": "OK"} at /: its table, router, graph, stats and
        # performance views listed every table's contents and the partition assignment to anyone.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        key_serializer="json",  # tables (changelogs); topics below are raw bytes
        value_serializer="json",
        producer_linger=0.01,
        producer_max_batch_size=512 * 1024,
        # Measured (bench pipeline): bigger polls and buffers keep micro-batches full.
        broker_max_poll_records=max(2000, settings.batch_size * 2),
        stream_buffer_maxsize=max(8192, settings.batch_size * 8),
        consumer_max_fetch_size=4 * 1024 * 1024,
        monitor=_PerEventQuietMonitor(),
        TableManager=transport.TableManager,  # recovery reports changelog holes (transport/recovery_holes.py)
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}

    def raw_changelog(topic: str, partitions: int) -> faust.TopicT:
        """A table's changelog read as raw bytes: each record reaches the table's check (ValidatedChangelog)
        and the DLQ, not Faust's decoding, which drops a record that is not JSON with only a log line
        ("Error in recovery" in recovery)."""
        return app.topic(topic, partitions=partitions, **raw)

    events = app.topic(t.events, partitions=settings.partitions, **raw)
    videos = app.topic(t.videos, partitions=settings.videos_partitions, **raw)
    comments = app.topic(t.comments, partitions=settings.partitions, **raw)
    decisions = app.topic(t.review_decisions, partitions=settings.partitions, **raw)

    output = output or OutputProducer(
        settings.bootstrap_servers, extra={"compression.type": settings.output_compression}, security=settings.security
    )
    users = app.tables.add(OutputTable(
        app, name=USERS_TABLE, default=None, key_type=str, partitions=settings.partitions,
        changelog_topic=raw_changelog(changelog(settings, USERS_TABLE), settings.partitions),
        **_store_of(settings, USERS_TABLE),
    ))  # fmt: skip
    users.output, users.partition_count, users.cache_size = output, settings.partitions, settings.users_cache_size
    item_state = app.tables.add(ItemStateTable(
        app, name=ITEM_STATE_TABLE, default=None, key_type=str, partitions=settings.partitions,
        changelog_topic=raw_changelog(changelog(settings, ITEM_STATE_TABLE), settings.partitions),
        **_store_of(settings, ITEM_STATE_TABLE),
    ))  # fmt: skip
    item_state.output, item_state.partition_count, item_state.cache_size = output, settings.partitions, 0
    reviews = app.tables.add(OutputTable(
        app, name=REVIEWS_TABLE, default=None, key_type=str, partitions=settings.partitions,
        changelog_topic=raw_changelog(changelog(settings, REVIEWS_TABLE), settings.partitions),
        **_store_of(settings, REVIEWS_TABLE),
    ))  # fmt: skip
    reviews.output, reviews.partition_count = output, settings.partitions
    # Agent inputs: never compacted, never transactional; a hole in their offsets is data deleted unread.
    options = transport.TransportOptions(  # read by the worker's consumer thread and producer
        # The tables flush the output producer, then store locally what it acknowledged (the item side
        # writes its changed state first).
        fetch_max_wait_ms=settings.fetch_max_wait_ms, flush_with_commit=(item_state, users, reviews), gap_emit=output.emit,
        dlq=t.dlq,
        gap_topics=frozenset([t.events, t.videos, t.comments, t.interactions_by_video, t.review_decisions]),
        changelog_topics=frozenset(changelog(settings, name) for name in TABLES) | {t.item_vectors, t.user_gram, t.models},
    )  # fmt: skip
    transport.configure(app, options)
    def read_by_all(table_type: type[faust.GlobalTable], name: str, partitions: int, **kwargs: Any) -> Any:
        """A table every worker reads in full: as `app.GlobalTable` makes one (is_global: all changelog
        partitions are assigned to every worker, not only its own and one standby's)."""
        return app.tables.add(
            table_type(
                app, name=name, default=None, key_type=str, partitions=partitions, is_global=True,
                beacon=app.tables.beacon, standby_buffer_size=1, recovery_buffer_size=1, **kwargs,
            )
        )  # fmt: skip

    catalog = read_by_all(CatalogTable, CATALOG_TABLE, settings.videos_partitions,
                          changelog_topic=raw_changelog(changelog(settings, CATALOG_TABLE), settings.videos_partitions))  # fmt: skip
    catalog.on_available = recommender.add_video  # new uploads into the exploration pool
    by_video = app.topic(t.interactions_by_video, partitions=settings.partitions, **raw)

    def reject(message: Any, reason: str, detail: str) -> None:
        """A record of an internal topic that is not applied (a Faust message, or a streams.pipeline.Message:
        the same fields): dead-lettered like a bad event."""
        m = message
        raw = Message(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value)
        pipeline.dead_letter(raw, InvalidMessage(reason, detail))

    # The tables' own changelogs are input too (recovery, standbys): a record the worker would not write is
    # dead-lettered with its reason and never stored.
    for table, check, on_bytes, reason in (
        (users, check_user_record, True, "invalid_user_record"),
        (item_state, state_check(settings.recs.factors, settings.partitions), False, "invalid_item_state"),
        (reviews, check_review_record, True, "invalid_review_record"),
        (catalog, check_catalog_record, False, "invalid_catalog_record"),
    ):
        table.validate, table.raw, table.reason, table.reject = check, on_bytes, reason, reject

    def replica(name: str, topic: str, on_batch: Any, validate: Any, reason: str,
                partitions: int = settings.partitions) -> TopicReplica:  # fmt: skip
        table = read_by_all(TopicReplica, name, partitions, changelog_topic=raw_changelog(topic, partitions))
        table.on_batch, table.validate, table.reason, table.reject = on_batch, validate, reason, reject
        return table

    item_side = ItemSide(
        settings.recs,
        gram=recommender.gram,
        inactive=lambda: catalog.inactive,
        state=item_state,
        partitions=settings.partitions,
        reject=reject,
    )
    item_side.new_model(recommender.model_version, recommender.saved_videos())
    factors, max_norm = settings.recs.factors, settings.recs.max_vector_norm
    vectors = replica("item-vectors", t.item_vectors, _apply_vectors(recommender, item_side),
                      _item_vector_check(factors, max_norm), "invalid_item_vector")  # fmt: skip
    replica("user-gram", t.user_gram, _apply_grams(recommender, factors), _gram_check(factors, settings.partitions),
            "invalid_gram")  # fmt: skip
    refreshing: list[asyncio.Task] = []
    comment_models = [scorer]  # the one being served: swapped whole, between two batches

    def on_version() -> None:
        """A new batch version: stamped from now on, and this worker's users are served again with it;
        not while tables recover (a restart replays the version the lists were already made with)."""
        metrics.set_build(recommender.model_version, comment_models[0].model_version)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # applied outside a running worker (tests, tools): nobody to serve
            return
        if getattr(app, "in_recovery", False):
            return
        for task in refreshing:
            task.cancel()
        refreshing[:] = [loop.create_task(refresh_users())]

    async def each_user(partitions: set[int], step_id: str, fun: Any, pending: Any = lambda n: None) -> None:
        """`fun` over every user of these `events` partitions, a micro-batch at a time, yielding between
        batches so that the agents keep up; `pending(n)`: told how many users are still to do."""
        owned = list(users.users_in(partitions).items())
        pending(len(owned))
        step = settings.batch_size
        try:
            for start in range(0, len(owned), step):
                # A rebalance under way (flow suspended): wait for its assignment, then go on only with users
                # of partitions still ours; what this worker computed for the others would be the old
                # owner's outputs (as streams/batching.py `still_current`).
                await app.flow_control.acquire()
                mine = users.active_partitions()
                fun({u: p for u, p in owned[start : start + step] if p in mine})
                pending(max(0, len(owned) - start - step))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged and counted; the next version or assignment runs it again
            log.exception("step %s failed", step_id)
            metrics.TASK_ERRORS.labels(step_id).inc()
        finally:
            pending(0)

    async def refresh_users() -> None:
        """Every user of this worker's active `events` partitions is served again."""
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == t.events}
        await each_user(active, steps.REFRESH_RECS, pipeline.refresh, metrics.REFRESH_PENDING.set)

    factor_partitions: set[int] = set()  # events partitions whose users' factors this worker holds

    def restore_factors(active: set[int]) -> None:
        """Partitions new to this worker (a start, a rebalance): their users' factors are solved again from
        the users table, so that the partial Grams it publishes cover them all (Recommender.restore_users).
        Partitions it no longer owns are let go here too: ownership is read from the assignment, not only from
        the revocation signal (which on the embedded broker's failed SyncGroups is not known to be complete)."""
        gone = factor_partitions - active
        if gone:
            release(gone)
        new = active - factor_partitions
        factor_partitions.update(active)
        if new:
            task = asyncio.get_running_loop().create_task(each_user(new, steps.RESTORE_FACTORS, pipeline.restore))
            restoring[:] = [(p, t) for p, t in restoring if not t.done()] + [(new, task)]

    restoring: list[tuple[set[int], asyncio.Task]] = []  # partitions being restored, by task
    users.on_ready = restore_factors

    apply_models, vectors.on_reached = _apply_models(recommender, item_side, factors, on_version, lambda: vectors.reached)
    replica("models", t.models, apply_models, _model_check(factors), "invalid_model_record", partitions=1)

    pipeline = Pipeline(settings, users, catalog, recommender, output.emit, bind=_bind)
    pipeline.review = desk = ReviewDesk(settings, reviews, output.emit, pipeline.dead_letter)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    metrics.set_build(recommender.model_version, scorer.model_version)
    LAG.watch(app)

    def release(lost: set[int]) -> None:
        """Users of these events partitions are served elsewhere now: drop their factors and partials."""
        for partitions, task in restoring:  # unfinished: their partitions are restored again if they stay
            if not task.done():
                task.cancel()
                factor_partitions.difference_update(partitions)
        recommender.drop_partitions(lost)
        factor_partitions.difference_update(lost)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        release({tp.partition for tp in revoked if tp.topic == t.events})

    @app.agent(events, name=steps.INTERACTIONS)
    async def interactions(stream: faust.StreamT) -> None:
        async for batch in micro_batches(stream, settings.batch_size, settings.batch_max_wait_s):
            with metrics.batch(steps.INTERACTIONS, len(batch)):
                await pipeline.run_batch(pipeline.process_events, [_message(e) for e in batch], steps.INTERACTIONS)

    @app.agent(videos, name=steps.CATALOG)
    async def catalog_agent(stream: faust.StreamT) -> None:
        async for batch in micro_batches(stream, settings.batch_size, settings.batch_max_wait_s):
            with metrics.batch(steps.CATALOG, len(batch)):
                await pipeline.run_batch(pipeline.process_videos, [_message(e) for e in batch], steps.CATALOG)

    @app.agent(by_video, name=steps.ITEM_TRAINER)
    async def item_trainer(stream: faust.StreamT) -> None:
        async for batch in micro_batches(stream, settings.batch_size, settings.batch_max_wait_s):
            with metrics.batch(steps.ITEM_TRAINER, len(batch)):
                await pipeline.run_batch(item_side.apply, [_message(e) for e in batch], steps.ITEM_TRAINER)

    @app.timer(settings.model_poll_interval_s)
    @_retried_next_tick(steps.SWAP_MODEL)
    async def swap_model() -> None:
        """A new batch model saved in REELSTREAM_RECS__MODEL_DIR is served without stopping the worker."""
        model = await asyncio.get_running_loop().run_in_executor(None, recommender.newer_model)
        if model is not None:
            recommender.swap(model)
            item_side.new_model(recommender.model_version, recommender.saved_videos())
            metrics.set_build(recommender.model_version, comment_models[0].model_version)

    @app.timer(settings.model_poll_interval_s)
    @_retried_next_tick(steps.SWAP_COMMENT_MODEL)
    async def swap_comment_model() -> None:
        """New comment-model weights saved where the worker loaded its own are served without stopping; on
        the inference thread, so a batch being scored finishes with the model it started with."""
        model = await asyncio.get_running_loop().run_in_executor(executor, comment_models[0].newer)
        if model is not None:
            log.info("comment models %s -> %s", comment_models[0].model_version, model.model_version)
            comment_models[0] = model
            metrics.set_build(recommender.model_version, model.model_version)

    @app.timer(settings.recs.item_refresh_interval_s)
    @_retried_next_tick(steps.REFRESH_ITEMS)
    async def refresh_items() -> None:
        """The item cadence: re-solved vectors go to item-vectors, and from there to every replica."""
        with metrics.INFERENCE.labels("als_items").time(), metrics.ALS_UPDATE.labels("item").time():
            ids, vectors = item_side.tick()
        version = recommender.model_version
        for video_id, vector in zip(ids, vectors):
            output.emit(t.item_vectors, orjson.dumps(video_id), orjson.dumps(vector_record(vector, version, batch=False)))
        metrics.OUTPUTS.labels("item_vectors").inc(len(ids))
        mine = users.active_partitions()  # a partition's partial is its owner's to publish, no one else's
        for partition, partial in list(recommender.partials().items()):
            if partition not in mine:
                continue
            output.emit(t.user_gram, orjson.dumps(partition), orjson.dumps(partial.ravel().tolist()), None, partition)

    @app.timer(settings.store_purge_interval_s)
    @_retried_next_tick(steps.PURGE_STORES)
    async def purge_stores() -> None:
        """What an erasure deleted from the local stores leaves their files too (OutputTable.purge_deleted)."""
        for table in (users, item_state, reviews):
            purged = await table.purge_deleted()
            if purged:
                metrics.STORE_KEYS_PURGED.labels(table.name).inc(purged)
                log.info("step %s: %d deleted keys compacted out of the %s store", steps.PURGE_STORES, purged, table.name)

    async def moderate(messages: list[Message]) -> None:
        pending = pipeline.comments_batch(messages)
        if not pending:
            return
        metrics.BATCH_SIZE.labels(steps.MODERATION).observe(len(pending))
        texts = [c.text for _, c in pending]
        langs = [c.lang for _, c in pending]
        # Off the event loop: other agents keep consuming while the model runs.
        current = comment_models[0]  # its version stamps the flags it scored
        with metrics.INFERENCE.labels("comments").time():
            results = await asyncio.get_running_loop().run_in_executor(executor, current.score, texts, langs)
        kept = [n for n, (msg, _) in enumerate(pending) if msg.handle is None or still_current(app, msg.handle)]
        if len(kept) < len(pending):  # a rebalance began while the model ran: the partitions' owner scores again
            log.info("%d comment scores discarded: a rebalance began while they were computed", len(pending) - len(kept))
            metrics.DISCARDED.labels(steps.MODERATION).inc(len(pending) - len(kept))
        pipeline.apply_comment_scores([pending[n] for n in kept], [results[n] for n in kept], current.model_version)

    @app.agent(comments, name=steps.MODERATION)
    async def moderation(stream: faust.StreamT) -> None:
        mod = settings.moderation
        async for batch in micro_batches(stream, mod.batch_size, mod.batch_max_wait_s):
            with metrics.batch(steps.MODERATION):  # its size (comments still owed a score) is recorded in moderate
                await pipeline.run_batch(moderate, [_message(e) for e in batch], steps.MODERATION)

    @app.agent(decisions, name=steps.REVIEW_DECISIONS)
    async def review_decisions(stream: faust.StreamT) -> None:
        """Reviewers' decisions (`reelstream review`): input like `events`, checked before they are applied."""
        async for batch in micro_batches(stream, settings.batch_size, settings.batch_max_wait_s):
            with metrics.batch(steps.REVIEW_DECISIONS, len(batch)):
                await pipeline.run_batch(desk.process_decisions, [_message(e) for e in batch], steps.REVIEW_DECISIONS)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        actives = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == t.events}
        queued, oldest = desk.queue_stats(v for p in actives for _, v in reviews.items_in(p))
        metrics.REVIEW_QUEUE_ITEMS.set(queued)
        metrics.REVIEW_OLDEST_AGE.set(oldest)
        metrics.USERS.set(users.count())
        metrics.INDEX_ITEMS.set(recommender.index_size())
        # aiohttp rejects content_type= with parameters; the header is set directly (DESIGN.md).
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.pipeline = pipeline  # type: ignore[attr-defined]
    app.item_side = item_side  # type: ignore[attr-defined]
    return app
