"""`reelstream bench pipeline`: events/s and event-to-output latency of a real worker, with a raw
confluent-kafka consumer on the same broker in the same run as the baseline.

Phase 1 (throughput): N generated messages are produced as fast as the client can, and we time until the
worker has accounted for every one (valid, duplicate or dead-lettered): from the first produce to the last
output the worker wrote for them (its broker timestamp). The bench polls the worker's /metrics only to know
when to look; each scrape costs the worker CPU, so it polls twice a second and the end time does not depend
on when the poll lands.

The backlog is written in producer batches of up to `backlog_linger_ms` (default 5 ms, at most 1 MB per
partition). The embedded broker (librdkafka's mock cluster) answers a fetch with ONE producer batch per
partition ("FIXME: Multiple messageSets ?" in rdkafka_mock_handlers.c), where Kafka returns a backlog up
to max.partition.fetch.bytes (1 MB by default) per partition per fetch. With 5 ms batches the mock hands
the worker ~150 events per partition per round trip (its aiokafka consumer buffers one fetch per
partition), so this phase partly measures the mock's fetch; `--backlog-linger-ms 100` writes the backlog
in batches closer to what Kafka would return (7-14% more events/s on the same code, measured). The result
states the value used.

Phase 2 (latency): a fresh stream is produced at a fixed rate below capacity, in 5 ms producer batches;
an event's latency is the time from its produce timestamp to the first recommendation for its user whose
source event is that event or a later one of the same user (a recommendation reflects every earlier event
of its user: same key, same partition, in order).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streams.producer import make_producer
from streams.settings import Settings, TopicSettings


def _produce(bootstrap: str, path: Path, rate: float | None = None, linger_ms: int = 5) -> dict[str, float]:
    """Send a record file with fresh timestamps; returns event_id -> produce time (seconds)."""
    from lab.recording import produce_records, read_records

    # Without idempotence, as the backlog has always been written (a bench input, not a delivery guarantee).
    producer = make_producer(
        bootstrap, **{"enable.idempotence": False, "linger.ms": linger_ms, "batch.size": 1 << 20}
    )
    sent_at: dict[str, float] = {}

    def note(_: int, rec: Any, at: float) -> None:
        if rec.topic != "videos":
            try:
                sent_at[orjson.loads(rec.value)["event_id"]] = at
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass

    produce_records(producer, read_records(path), rate=rate, fresh_timestamps=True, on_sent=note)
    producer.flush(60)
    return sent_at


def _raw_consumer_rate(bootstrap: str, topic: str, count: int) -> float:
    """Messages/s of a plain confluent-kafka consumer over the same messages, timed from the first message
    received (connection and metadata setup excluded, as they are for the warmed-up worker)."""
    from lab.recording import read_topic

    n, start = 0, None
    for _ in read_topic(bootstrap, topic, count=count):
        n += 1
        if start is None:
            start = time.perf_counter()
    return (n - 1) / (time.perf_counter() - start) if n > 1 and start is not None else 0.0


def _latencies(bootstrap: str, topic: str, path: Path, sent_at: dict[str, float]) -> list[tuple[float, float]]:
    """(produce time, latency) per event that got a recommendation, both in seconds."""
    from lab.recording import read_records, read_topic

    order: dict[str, list[str]] = {}
    for rec in read_records(path):
        obj = orjson.loads(rec.value) if rec.topic != "videos" else None
        if obj and obj["event_id"] in sent_at:
            order.setdefault(obj["user_id"], []).append(obj["event_id"])
    position = {eid: (user, i) for user, ids in order.items() for i, eid in enumerate(ids)}
    served: dict[str, list[tuple[int, float]]] = {}  # user -> [(index of source event, output time)]
    for out in read_topic(bootstrap, topic):
        if out.value is None:
            continue
        rec = orjson.loads(out.value)
        pos = position.get(rec["source_event_id"])
        if pos is not None:
            served.setdefault(pos[0], []).append((pos[1], out.timestamp_ms / 1000))
    result = []
    for user, ids in order.items():
        outs = sorted(served.get(user, []), key=lambda x: x[1])
        for i, eid in enumerate(ids):
            first = next((t for j, t in outs if j >= i), None)
            if first is not None:
                result.append((sent_at[eid], first - sent_at[eid]))
    return result


def _last_output_at(bootstrap: str, topics: list[str]) -> float | None:
    """The latest broker timestamp (seconds) of any message on `topics`: when the worker wrote its last output."""
    from lab.recording import read_topic

    stamps = [r.timestamp_ms for t in topics for r in read_topic(bootstrap, t) if r.timestamp_ms is not None]
    return max(stamps) / 1000 if stamps else None


def run_ended_at(bootstrap: str, topics: TopicSettings, polled: float) -> float:
    """When a throughput run ended: the worker's last output (recommendations, flags, dead letters) where that
    came before `polled`, when the bench's polling noticed every event accounted for (the benches' ratios time
    both sides this one way)."""
    return min(_last_output_at(bootstrap, [topics.recommendations, topics.moderation_flags, topics.dlq]) or polled,
               polled)  # fmt: skip


def population(events: int) -> tuple[int, int]:
    """`bench pipeline`'s users and videos for a stream of `events`: ~25 events per user, as sessions."""
    return max(200, events // 25), max(300, events // 100)


def bench_pipeline(
    settings: Settings,
    events: int,
    latency_events: int,
    latency_rate: float,
    seed: int,
    series: bool = False,
    backlog_linger_ms: int = 5,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The bench's JSON result; with `series`, also "series" {throughput, latency} over time (for --plot).
    `env`: REELSTREAM_* settings of its worker beyond this process's (`bench state` runs it on its own model)."""
    from lab.generator import GeneratorConfig, generate
    from lab.local import LocalStack, offset_gaps, recommendations, total
    from lab.recording import read_records
    from monitoring.sampling import RateSampler

    with LocalStack(env=dict(env or {})) as stack:
        stack.start_broker()
        users, videos = population(events)
        phase1 = stack.workdir / "throughput.jsonl"
        phase2 = stack.workdir / "latency.jsonl"
        generate(GeneratorConfig(users=users, videos=videos, events=events, seed=seed), phase1)
        generate(GeneratorConfig(users=users, videos=videos, events=latency_events, seed=seed + 1), phase2)
        n1 = sum(1 for _ in read_records(phase1))
        n2 = sum(1 for _ in read_records(phase2))
        worker = stack.start_worker()

        def consumed() -> float:
            m = worker.metrics()
            return sum(total(m, f"reelstream_{n}_total") for n in ("events", "duplicate_events", "dlq_messages"))

        # The sampler scrapes /metrics twice a second: only when a plot asks for the series.
        sampler = RateSampler(consumed) if series else contextlib.nullcontext()
        start, cpu_start, main_start = time.time(), worker.cpu_seconds(), worker.cpu_seconds(main_thread=True)
        served_start = recommendations(worker.metrics())
        with sampler:
            _produce(stack.bootstrap, phase1, linger_ms=backlog_linger_ms)
            stack.wait_consumed(n1, timeout=600, settle=0.0, interval=0.5)
        polled_end, worker_cpu = time.time(), worker.cpu_seconds() - cpu_start
        main_cpu = worker.cpu_seconds(main_thread=True) - main_start
        served = recommendations(worker.metrics()) - served_start
        seconds = run_ended_at(stack.bootstrap, settings.topics, polled_end) - start
        events_per_s = n1 / seconds

        sent_at = _produce(stack.bootstrap, phase2, rate=latency_rate)
        stack.wait_consumed(n1 + n2, timeout=600)
        timed = _latencies(stack.bootstrap, settings.topics.recommendations, phase2, sent_at)
        lat = np.array([latency for _, latency in timed]) * 1000
        raw = _raw_consumer_rate(stack.bootstrap, settings.topics.events, n1)
        final = worker.metrics()
        info = {k: v for k, v in final.items() if k.startswith("reelstream_build_info")}
    result = {
        "events": n1,
        "events_per_s": round(events_per_s, 1),
        "raw_consumer_events_per_s": round(raw, 1),
        "ratio": round(events_per_s / raw, 4),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        },
        "latency_events": int(len(lat)),
        "latency_rate_per_s": latency_rate,
        "backlog_linger_ms": backlog_linger_ms,
        "seconds": round(seconds, 2),
        # CPU time per event is what capacity planning needs; wall time depends on what else runs.
        "worker_cpu_ms_per_1k_events": round(worker_cpu / n1 * 1e6, 1),
        "worker_main_thread_cpu_ms_per_1k_events": round(main_cpu / n1 * 1e6, 1),  # the event loop's share
        # Users served per 1,000 events (one list per user per micro-batch): what the CPU above is spent on.
        "recommendations_per_1k_events": round(served / n1 * 1000, 1),
        # Records the broker deleted before the worker read them (dead-lettered as offset gaps, on any topic it
        # reads): counted as accounted for above, so a run with any is not a clean throughput number.
        "offset_gaps": offset_gaps(final),
        "build": next(iter(info), ""),
    }
    if series:
        t0 = min((sent for sent, _ in timed), default=0.0)
        result["series"] = {
            "throughput": sampler.points,  # type: ignore[union-attr]
            "latency": [[round(sent - t0, 3), round(latency * 1000, 2)] for sent, latency in timed],
        }
    return result
