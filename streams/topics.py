"""Every topic the app uses, by name, so the broker can pre-create them without importing Faust.

The librdkafka mock cluster cannot create topics on request, and Faust must not try to
(`topic_allow_declare=False`), so this list must name changelogs and Faust's internal topics too.
"""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2

from streams.settings import Settings

# Faust tables, by name. Changelog topics are "<app_id>-<table>-changelog".
USERS_TABLE = "users"
CATALOG_TABLE = "catalog"  # a GlobalTable: every worker holds all of it
ITEM_STATE_TABLE = "item-state"  # the item side's interactions and factors, per interactions-by-video partition
REVIEWS_TABLE = "reviews"  # per user: pending review items and appealable blocks (streams/review.py)
TABLES = (USERS_TABLE, CATALOG_TABLE, ITEM_STATE_TABLE, REVIEWS_TABLE)


def changelog(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def all_topics(settings: Settings) -> dict[str, int]:
    """Topic name -> partition count. Everything is co-partitioned with the same count."""
    t = settings.topics
    names = [
        t.events, t.recommendations, t.moderation_flags, t.dlq, t.comments,
        t.interactions_by_video, t.item_vectors, t.user_gram,
        f"{settings.app_id}-__assignor-__leader",
        changelog(settings, USERS_TABLE), changelog(settings, ITEM_STATE_TABLE),
        t.review_queue, t.review_decisions, t.statements_of_reasons, t.appeal_outcomes,
        changelog(settings, REVIEWS_TABLE),
    ]
    topics = {name: settings.partitions for name in names}
    topics[t.videos] = topics[changelog(settings, CATALOG_TABLE)] = settings.videos_partitions
    topics[t.models] = 1  # one version record; its one partition is also the trainers' lease (streams/trainer.py)
    return topics


def compacted(settings: Settings) -> set[str]:
    """Topics keyed by entity whose latest value is the state: compacted on real Kafka."""
    t = settings.topics
    return {
        t.recommendations, t.item_vectors, t.user_gram, t.models, t.review_queue,
        *(changelog(settings, name) for name in TABLES),
    }  # fmt: skip


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """Kafka topic configuration for `reelstream topics --create`: compacted topics, and review-queue also
    deleted after its retention (it holds comment texts: personal data, README "User data and erasure")."""
    config = {"cleanup.policy": "compact"} if name in compacted(settings) else {}
    if name == settings.topics.review_queue:
        config = {"cleanup.policy": "compact,delete", "retention.ms": str(settings.review.queue_retention_s * 1000)}
    return config


@functools.lru_cache(maxsize=1 << 20)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a key (murmur2, as Java clients, librdkafka's murmur2 and aiokafka).
    Remembered per key: aiokafka's murmur2 is pure Python, and the worker asks per item message."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
