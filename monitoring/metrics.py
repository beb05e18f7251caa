"""Prometheus metrics of a worker. Names: `reelstream_` prefix, base units, `_total` counters,
and no user or video ids in labels (bounded label sets only: type, reason, output, category, action, agent,
model, side, op, and topic/partition for consumer lag: monitoring/consumer.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)
# The installed distribution's version (pyproject.toml): read from its metadata, not imported from the CLI
# package above this one.
VERSION = version("reelstream")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EVENTS = Counter("reelstream_events_total", "Valid input events consumed, by type.", ["type"], registry=REGISTRY)
DUPLICATES = Counter(
    "reelstream_duplicate_events_total", "Redelivered events absorbed by event_id dedup.", registry=REGISTRY
)
DLQ = Counter("reelstream_dlq_messages_total", "Invalid messages sent to the DLQ, by reason.", ["reason"], registry=REGISTRY)
OUTPUTS = Counter("reelstream_outputs_total", "Messages produced, by output topic.", ["output"], registry=REGISTRY)
LATENCY = Histogram(
    "reelstream_event_to_output_seconds",
    "From the input message's Kafka timestamp to the output being produced, by output.",
    ["output"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "reelstream_batch_events", "Events per micro-batch, by agent.", ["agent"],
    buckets=(1, 8, 32, 64, 128, 256, 512, 1024, 2048), registry=REGISTRY,
)
INFERENCE = Histogram(
    "reelstream_model_inference_seconds", "Model time per micro-batch, by model.", ["model"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
FLAGS = Counter(
    "reelstream_moderation_flags_total", "Moderation flags emitted, by action.", ["action"], registry=REGISTRY
)
FLAG_CATEGORIES = Counter(
    "reelstream_moderation_categories_total", "Categories named as a reason of a review or block flag, by category.",
    ["category"], registry=REGISTRY,
)
DISCARDED = Counter(
    "reelstream_results_discarded_total",
    "Results computed for events whose rebalance began meanwhile, not applied (the owner computes them again), by step.",
    ["step"], registry=REGISTRY,
)
COMMENTS_ERASED = Counter(
    "reelstream_comments_erased_total", "Comments not scored because their user was erased first.", registry=REGISTRY
)
TASK_ERRORS = Counter(
    "reelstream_task_errors_total", "Failed runs of periodic tasks (retried at their next tick), by task.",
    ["task"], registry=REGISTRY,
)
REFRESHED = Counter(
    "reelstream_recommendations_refreshed_total", "Users served again because a new model version arrived.",
    registry=REGISTRY,
)
REFRESH_PENDING = Gauge(
    "reelstream_refresh_pending_users", "Users still to be served again with the newest model version.",
    registry=REGISTRY,
)
RESTORED = Counter(
    "reelstream_factors_restored_total",
    "Stored users whose factor was solved again when their partition came to this worker (for its Gram sums).",
    registry=REGISTRY,
)
ERASURES = Counter("reelstream_user_erasures_total", "user_delete events applied.", registry=REGISTRY)
STORE_KEYS_PURGED = Counter(
    "reelstream_store_keys_purged_total",
    "Keys deleted from a table's local store (erasures) and compacted out of its RocksDB files, by table.",
    ["table"],
    registry=REGISTRY,
)
# A/B arms (models/recs/arms.py): arm names come from configuration (a few, validated), never user ids.
AB_LISTS = Counter(
    "reelstream_ab_lists_closed_total", "Served lists closed by their user's next event, by A/B arm.", ["arm"],
    registry=REGISTRY,
)
AB_HITS = Counter(
    "reelstream_ab_list_hits_total",
    "Closed lists whose user's next event watched or liked one of their videos, by A/B arm and action.",
    ["arm", "action"], registry=REGISTRY,
)
INDEX_ITEMS = Gauge("reelstream_index_items", "Item vectors in this worker's index replica.", registry=REGISTRY)
INDEX_OPS = Counter(
    "reelstream_index_operations_total", "Vectors upserted into or removed from the index replica, by op.",
    ["op"], registry=REGISTRY,
)
INDEX_SEARCH = Histogram(
    "reelstream_index_search_seconds", "One index search call (top-k for a micro-batch of queries).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1), registry=REGISTRY,
)
ALS_UPDATE = Histogram(
    "reelstream_als_update_seconds",
    "Streaming ALS update time, by side: user = one micro-batch of touched users (stacked solve + one index search), "
    "item = one refresh tick re-solving the videos touched since the last one.",
    ["side"], buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "reelstream_batch_seconds", "Time to apply one micro-batch, by agent.", ["agent"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
REBALANCES = Counter(
    "reelstream_rebalances_total", "Consumer group rebalances this worker took part in (partitions assigned).",
    registry=REGISTRY,
)
USERS = Gauge("reelstream_users", "Users with stored history on this worker.", registry=REGISTRY)
ITEM_SIDE_INTERACTIONS = Gauge(
    "reelstream_item_side_interactions", "(video, user) interactions the item side holds on this worker: those of "
    "videos no batch fit covers yet.", registry=REGISTRY,
)
CHANGELOG_APPLIED = Counter(
    "reelstream_changelog_records_applied_total",
    "Changelog records applied to the users table's local store (recovery and standby): after a restart on its "
    "own disk, only the tail past the store's offset.",
    registry=REGISTRY,
)
# The moderation workflow (streams/review.py). Labels: closed sets (kind, decision, category, action, outcome).
REVIEW_QUEUED = Counter(
    "reelstream_review_items_queued_total", "Items put in the review queue, by kind (review, sample, appeal, "
    "escalated).", ["kind"], registry=REGISTRY,
)
REVIEW_DECISIONS = Counter(
    "reelstream_review_decisions_total", "Reviewer decisions applied, by decision and the reviewer's category.",
    ["decision", "category"], registry=REGISTRY,
)
REVIEW_MODEL_AGREEMENT = Counter(
    "reelstream_review_model_decisions_total",
    "Reviewer decisions by the model's action on the same comment: agreement is approve on allow and remove on "
    "block; review is where the model deferred.", ["model_action", "decision"], registry=REGISTRY,
)
REVIEW_QUEUE_ITEMS = Gauge(
    "reelstream_review_queue_items", "Items pending review in this worker's partitions.", registry=REGISTRY
)
REVIEW_OLDEST_AGE = Gauge(
    "reelstream_review_queue_oldest_item_age_seconds", "Age of the oldest pending item in this worker's partitions "
    "(0 when none).", registry=REGISTRY,
)
REVIEW_ERASED = Counter(
    "reelstream_review_items_erased_total", "Pending review items removed by their user's user_delete.",
    registry=REGISTRY,
)
STATEMENTS = Counter(
    "reelstream_statements_of_reasons_total", "DSA statements of reasons emitted, by who decided (model, reviewer).",
    ["decided_by"], registry=REGISTRY,
)
APPEALS = Counter(
    "reelstream_appeals_total", "Appeals by outcome (queued, upheld, reversed, not_appealable).", ["outcome"],
    registry=REGISTRY,
)
BUILD = Info("reelstream_build", "Version of the worker and of the models it serves.", registry=REGISTRY)
BUILD.info({"version": VERSION})


def set_build(recommender: str, moderation: str) -> None:
    """The served model versions, beside the worker version (Info.info replaces every label at once)."""
    BUILD.info({"version": VERSION, "recommender": recommender, "moderation": moderation})


@contextmanager
def batch(agent: str, size: int | None = None) -> Iterator[None]:
    """Time one micro-batch of `agent` (and record its size when given: some agents record theirs later)."""
    if size is not None:
        BATCH_SIZE.labels(agent).observe(size)
    with BATCH_SECONDS.labels(agent).time():
        yield


def exposition() -> bytes:
    return generate_latest(REGISTRY)


# The trainer process (streams/trainer.py): its own /metrics, same registry module, disjoint names.
TRAINER_ACTIVE = Gauge(
    "reelstream_trainer_active", "1 while this trainer holds the lease (one active trainer per app).", registry=REGISTRY
)
TRAINER_BUSY = Gauge(
    "reelstream_trainer_busy", "1 while a refit is due or running on what has been read so far.", registry=REGISTRY
)
TRAINER_OFFSET = Gauge(
    "reelstream_trainer_changelog_offset", "Next offset the trainer reads of each users changelog partition.",
    ["partition"], registry=REGISTRY,
)
TRAINER_REFITS = Counter("reelstream_trainer_refits_total", "Batch refits published.", registry=REGISTRY)
TRAINER_FIT_SECONDS = Histogram(
    "reelstream_trainer_fit_seconds", "Duration of one refit (fit and publish).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0), registry=REGISTRY,
)
TRAINER_INTERACTIONS = Gauge(
    "reelstream_trainer_interactions", "Stored interactions (users table rows) the trainer holds.", registry=REGISTRY
)
TRAINER_MODEL = Info("reelstream_trainer_model", "The model version this trainer published last.", registry=REGISTRY)
