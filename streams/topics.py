"""Every topic the app uses, by name, so the broker can pre-create them without importing Faust.

The librdkafka mock cluster cannot create topics on request, and Faust must not try to
(`topic_allow_declare=False`), so this list must name changelogs and Faust's internal topics too.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

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


class Erasure(NamedTuple):
    """A topic's erasure contract: what in it links a record to a user, and what removes that at `user_delete`.

    tombstone: keyed by user (or by something only that user has), compacted; the worker writes a tombstone
      at erasure, and compaction removes the older records.
    retention: not keyed so that a tombstone could reach the user's records; deleted after
      `user_data_retention_s` (review-queue: `review.queue_retention_s`, besides its tombstones).
    producers: the producers' own topics; their retention is theirs to set.
    none: nothing per user."""

    links: str
    mechanism: Literal["tombstone", "retention", "producers", "none"]


def erasure_contract(settings: Settings) -> dict[str, Erasure]:
    """Every topic of `all_topics`, with its erasure contract (tests/test_topics.py checks both agree)."""
    t = settings.topics
    nothing = Erasure("nothing per user", "none")
    return {
        t.events: Erasure("user id, comment text", "producers"),
        t.videos: Erasure("nothing per user (videos)", "producers"),
        t.recommendations: Erasure("user id (key), their list", "tombstone"),
        changelog(settings, USERS_TABLE): Erasure("user id (key), the whole history", "tombstone"),
        changelog(settings, ITEM_STATE_TABLE): Erasure("user id (key), factor, confidences", "tombstone"),
        changelog(settings, REVIEWS_TABLE): Erasure("user id (key), pending items, blocked comments' texts", "tombstone"),
        t.review_queue: Erasure("user id, comment text", "tombstone"),
        t.interactions_by_video: Erasure("user id, factor", "retention"),
        t.comments: Erasure("user id, comment text", "retention"),
        t.moderation_flags: Erasure("user id, event id", "retention"),
        t.review_decisions: Erasure("user id (key)", "retention"),
        t.appeal_outcomes: Erasure("user id", "retention"),
        t.dlq: Erasure("the bad record's raw bytes", "retention"),
        t.statements_of_reasons: Erasure("the comment's event id only: the record the DSA asks for", "none"),
        t.item_vectors: nothing, t.user_gram: nothing, t.models: nothing,
        changelog(settings, CATALOG_TABLE): nothing, f"{settings.app_id}-__assignor-__leader": nothing,
    }  # fmt: skip


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """Kafka topic configuration for `reelstream topics --create`: compacted topics, and those holding user
    data no tombstone reaches deleted after their retention (README "User data and erasure"); review-queue
    (comment texts) is both."""
    config = {"cleanup.policy": "compact"} if name in compacted(settings) else {}
    if name == settings.topics.review_queue:
        config = {"cleanup.policy": "compact,delete", "retention.ms": str(settings.review.queue_retention_s * 1000)}
    elif erasure_contract(settings).get(name, Erasure("", "none")).mechanism == "retention":
        config = {"cleanup.policy": "delete", "retention.ms": str(settings.user_data_retention_s * 1000)}
    return config


def erasure_summary(settings: Settings, name: str) -> str:
    """What `reelstream topics` states for a topic: its mechanism, with the retention where one applies."""
    mechanism = erasure_contract(settings)[name].mechanism
    retention_ms = topic_config(settings, name).get("retention.ms")
    if retention_ms is None:
        return mechanism
    seconds = int(retention_ms) // 1000
    unit = next((u for u in ((86_400, "days"), (3_600, "hours")) if seconds % u[0] == 0), (1, "s"))
    return f"{mechanism}; deleted after {seconds // unit[0]} {unit[1]}"


@functools.lru_cache(maxsize=1 << 20)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a key (murmur2, as Java clients, librdkafka's murmur2 and aiokafka).
    Remembered per key: aiokafka's murmur2 is pure Python, and the worker asks per item message."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
