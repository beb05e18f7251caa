"""Prometheus metrics of a worker. Names: `reelstream_` prefix, base units, `_total` counters,
and no user or video ids in labels (bounded label sets only: type, reason, output, category, action).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from reelstream import __version__

REGISTRY = CollectorRegistry(auto_describe=True)

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
    "reelstream_moderation_categories_total", "Categories over their review threshold, by category.",
    ["category"], registry=REGISTRY,
)
COMMENTS_ERASED = Counter(
    "reelstream_comments_erased_total", "Comments not scored because their user was erased first.", registry=REGISTRY
)
ERASURES = Counter("reelstream_user_erasures_total", "user_delete events applied.", registry=REGISTRY)
INDEX_ITEMS = Gauge("reelstream_index_items", "Item vectors in this worker's index replica.", registry=REGISTRY)
USERS = Gauge("reelstream_users", "Users with stored history on this worker.", registry=REGISTRY)
BUILD = Info("reelstream_build", "Version of the worker and of the models it serves.", registry=REGISTRY)
BUILD.info({"version": __version__})


def exposition() -> bytes:
    return generate_latest(REGISTRY)
