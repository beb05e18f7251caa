"""The Faust application: topics, tables and agents, wired from Settings around `Pipeline`.

Topics are pre-created by the broker (or by ops on real Kafka): Faust never declares topics here, so
the same worker runs unchanged against librdkafka's mock cluster and a real Kafka cluster.
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.streams import _current_event
from prometheus_client import CONTENT_TYPE_LATEST

from monitoring import metrics
from reelstream.settings import Settings
from streams.pipeline import CommentScorer, Message, Pipeline, Recommender
from streams.topics import CATALOG_TABLE, USERS_TABLE


def _message(event: faust.types.EventT) -> Message:
    m = event.message
    return Message(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, event)


def _bind(msg: Message) -> None:
    """Make msg's event Faust's current event, as per-event iteration would (take_events does not)."""
    _current_event.set(weakref.ref(msg.handle))


def create_app(settings: Settings, recommender: Recommender, scorer: CommentScorer) -> faust.App:
    t = settings.topics
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store="memory://",  # tables are rebuilt from their changelog topics on start
        topic_allow_declare=False,
        topic_disable_leader=False,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        key_serializer="json",  # tables (changelogs); topics below are raw bytes
        value_serializer="json",
        producer_linger=0.005,
        stream_buffer_maxsize=max(4096, settings.batch_size * 4),
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(t.events, partitions=settings.partitions, **raw)
    videos = app.topic(t.videos, partitions=settings.videos_partitions, **raw)
    comments = app.topic(t.comments, partitions=settings.partitions, **raw)
    outputs = {
        name: app.topic(name, partitions=settings.partitions, **raw)
        for name in (t.recommendations, t.moderation_flags, t.dlq, t.comments)
    }
    outputs[t.comments] = comments

    users = app.Table(USERS_TABLE, default=None, key_type=str, partitions=settings.partitions)
    catalog = app.GlobalTable(
        CATALOG_TABLE, default=None, key_type=str, partitions=settings.videos_partitions, recovery_buffer_size=1
    )

    def emit(topic: str, key: bytes | None, value: bytes | None, timestamp: float | None) -> None:
        outputs[topic].send_soon(key=key, value=value, timestamp=timestamp)

    pipeline = Pipeline(settings, users, catalog, recommender, emit, bind=_bind)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    metrics.BUILD.info({"recommender": recommender.model_version, "moderation": scorer.model_version})

    @app.agent(events, name="interactions")
    async def interactions(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_max_wait_s):
            metrics.BATCH_SIZE.labels("interactions").observe(len(batch))
            pipeline.process_events([_message(e) for e in batch])

    @app.agent(videos, name="catalog")
    async def catalog_agent(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_max_wait_s):
            pipeline.process_videos([_message(e) for e in batch])

    @app.agent(comments, name="moderation")
    async def moderation(stream: faust.StreamT) -> None:
        mod = settings.moderation
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(mod.batch_size, within=mod.batch_max_wait_s):
            pending = pipeline.comments_batch([_message(e) for e in batch])
            if not pending:
                continue
            metrics.BATCH_SIZE.labels("moderation").observe(len(pending))
            texts = [c.text for _, c in pending]
            langs = [c.lang for _, c in pending]
            # Off the event loop: other agents keep consuming while the model runs.
            with metrics.INFERENCE.labels("comments").time():
                results = await loop.run_in_executor(executor, scorer.score, texts, langs)
            pipeline.apply_comment_scores(pending, results, scorer.model_version)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        metrics.USERS.set(len(users))
        # aiohttp rejects content_type= with parameters; the header is set directly (DESIGN.md).
        return web.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.pipeline = pipeline  # type: ignore[attr-defined]
    return app
