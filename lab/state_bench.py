"""`reelstream bench state`: a worker on a large local store, killed with -9 and restarted on it.

The users table is built directly in the worker's RocksDB store (one database per changelog partition),
with the worker's own table, store and history encoder (`streams.tables.OutputTable`, `HistoryEncoder`), in
a child process that exits before the worker starts (RocksDB allows one process per database). Its
changelog is left empty: a restart on this disk reads the store and only the changelog written since, which
is the path under test; replaying millions of records into the embedded broker (5 MiB per partition) is
neither possible nor what a restart does. Item vectors come from a saved batch model in `model_dir` (ALS-like
synthetic factors, `build_model`), searched through an IVF index sized for the catalog (nlist = videos / 100,
nprobe = nlist / 32).

The item side holds the interactions of videos no batch fit covers (models/recs/item_side.py): the last
`new_videos` of the catalog are uploads since the last fit, absent from the saved model, and each stored
interaction is on one of them with probability `new_share` (new videos draw more than their number). Their
state is built in the item-state table's store the same way, with each user's factor solved by the worker's
recommender against the saved model and the confidences it would send (`video_confidences`).

Throughput after the restart is measured on two kinds of traffic: `bench pipeline`'s own stream, its users
and videos mapped onto stored ones (`events_per_s_after_recovery`, with `pipeline_traffic`: the baselines'
traffic, timed as they are, so the ratio compares the state with the state and not two workloads), and one
event per stored user not yet served (`one_event_per_user`: the worst case for reading state).
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson

from lab.bench import bench_pipeline, population, run_ended_at
from lab.chaos import Feeder, last_values
from lab.local import LocalStack, Worker, consumed, offset_gaps, recommendations, total, wait_for
from lab.recording import Record, group_lag, read_topic
from streams.producer import make_producer
from streams.topics import USERS_TABLE, changelog

INTERACTIONS = 20
KINDS = ("watch", "watch", "watch", "like", "share", "skip")
NEW_VIDEOS = 0.02  # of the catalog: uploaded since the last batch fit
NEW_SHARE = 0.05  # of stored interactions: on those uploads
PIPELINE_EVENTS, PIPELINE_SEED = 50_000, 11  # `bench pipeline`'s defaults: its stream is replayed on stored users


def user_id(n: int) -> str:
    return f"u{n:08d}"


def video_id(n: int) -> str:
    return f"v{n:06d}"


def new_videos(videos: int) -> int:
    """How many of the catalog's videos (the last ones) no batch fit covers."""
    return int(videos * NEW_VIDEOS)


def _rows(rng: random.Random, user: str, videos: int, t0: float) -> list[list]:
    from contracts.history import HistoryRow

    rows = []
    fitted = videos - new_videos(videos)
    for i in range(INTERACTIONS):
        kind = rng.choice(KINDS)
        ratio = round(rng.random(), 3) if kind == "watch" else 0.0
        n = rng.randrange(fitted, videos) if fitted < videos and rng.random() < NEW_SHARE else rng.randrange(fitted)
        rows.append(HistoryRow(f"{user}-{i:02d}", video_id(n), kind, t0 + i * 30.0, ratio).stored())
    return rows


def build_users(data_dir: str, users: int, videos: int, env: dict[str, str], seed: int = 0) -> None:
    """In this process: N users' records written to the users table's local store under `data_dir`, and
    the item side's state of those who touched a video no batch fit covers to the item-state table's."""
    import os

    os.environ.update(env)
    from contracts.history import VIDEO_ID
    from models.recs.confidence import user_confidences, video_confidences
    from models.recs.serving import load_recommender
    from models.text.base import load_comment_models
    from streams.app import create_app
    from streams.items import encode_state, state_key
    from streams.settings import Settings
    from streams.tables import HistoryEncoder
    from streams.topics import ITEM_STATE_TABLE, USERS_TABLE, partition_for
    from streams.transport.rocks_store import RocksPartitions

    class _NoOutput:
        def emit(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("building the store writes no changelog")

        async def flush(self) -> None:
            pass

    settings = Settings(data_dir=data_dir)
    recommender = load_recommender(settings.recs, settings.index)
    app = create_app(settings, recommender, load_comment_models(settings.moderation),
                     output=_NoOutput())  # type: ignore[arg-type]  # fmt: skip
    app.finalize()
    store = RocksPartitions(app.tables[USERS_TABLE].data)
    item_store = RocksPartitions(app.tables[ITEM_STATE_TABLE].data)
    fitted = set(recommender.saved_videos())
    encoder = HistoryEncoder(max_keys=1)
    rng = random.Random(seed)
    batch: dict[int, list[tuple[bytes, bytes]]] = {}
    item_batch: dict[int, list[tuple[bytes, bytes]]] = {}
    pending: list[tuple[str, list[list], set[str]]] = []  # users who touched an upload no fit covers

    def write_item_state() -> None:
        confs = [user_confidences(rows, settings.recs, unique=True) for _, rows, _ in pending]
        for (user, rows, new), conf, factor in zip(pending, confs, recommender.als.solve_users(confs)):
            by_partition: dict[int, dict[str, float]] = {}
            for video, c in video_confidences(rows, new, settings.recs, conf).items():
                if c:
                    by_partition.setdefault(partition_for(video.encode(), settings.partitions), {})[video] = c
            for partition, confidences in by_partition.items():
                value = encode_state((recommender.model_version, factor, confidences))
                item_batch.setdefault(partition, []).append((orjson.dumps(state_key(partition, user)), orjson.dumps(value)))
        pending.clear()

    for n in range(users):
        user = user_id(n)
        rows = _rows(rng, user, videos, 1.7e9 + n % 86_400)
        payload = encoder.encode(user, {"events": rows})
        batch.setdefault(partition_for(user.encode(), settings.partitions), []).append((orjson.dumps(user), payload))
        new = {row[VIDEO_ID] for row in rows} - fitted
        if new:
            pending.append((user, rows, new))
        if n % 20_000 == 19_999 or n == users - 1:
            write_item_state()
            for target, changes_of in ((store, batch), (item_store, item_batch)):
                for partition, changes in changes_of.items():
                    target.write(partition, changes, -1)  # no changelog offset: recovery reads the (empty) log from 0
                changes_of.clear()
    store.close()
    item_store.close()


def build_model(model_dir: Path, videos: int, factors: int, seed: int = 0, fitted: int | None = None) -> None:
    """A saved batch model: the first `fitted` (default all) of `videos` item vectors; the rest came after the
    fit. The vectors have the structure of ALS item factors (`indexer.synthetic.als_like`: clustered, a few
    popular clusters, lognormal norms), the items `bench index` tuned the IVF settings on. Isotropic normal
    vectors (before 2026-12-06) gave IVF nothing to partition: at nlist 1,000 / nprobe 31 over 100k of them
    a query computed 2,835 distances and found 0.31 of the exact top 20, against 886 and 0.94 on ALS-like
    items (in process, 1,000 queries), so the bench served lists no tuned deployment would, at 2.4x the
    search cost."""
    from indexer.synthetic import als_like
    from models.recs.als import StreamingALS
    from models.recs.config import RecsSettings

    settings = RecsSettings(factors=factors)
    als = StreamingALS(settings, model_version="bench-state")
    vectors, _ = als_like(videos, 0, factors, seed)
    fitted = videos if fitted is None else fitted
    als.upsert_items([video_id(n) for n in range(fitted)], vectors[:fitted])
    als.save(model_dir)


def _event(user: str, video: str, n: int, ts: float) -> bytes:
    return orjson.dumps({"schema_version": 1, "event_id": f"{user}-new-{n}", "type": "like", "user_id": user,
                         "video_id": video, "ts": ts})  # fmt: skip


def pipeline_traffic(
    workdir: Path, events: int, users: list[str], videos: list[str], start_ts: int, seed: int = PIPELINE_SEED
) -> list[Record]:
    """`bench pipeline`'s stream, its shape kept (sessions, event kinds, comments), its user and video ids
    mapped onto distinct stored ones (`users`, `videos` are drawn from; the first of each are used), and its
    clock starting at `start_ts`. Video events are left out: the stored catalog stands in for them."""
    from lab.generator import GeneratorConfig, StreamGenerator, generate
    from lab.recording import read_records

    path = workdir / "pipeline-traffic.jsonl"
    n_users, n_videos = population(events)
    config = GeneratorConfig(users=n_users, videos=n_videos, events=events, seed=seed, start_ts=start_ts)
    if config.users > len(users) or config.videos > len(videos):
        raise ValueError(
            f"{config.users} users and {config.videos} videos needed, {len(users)} and {len(videos)} given"
        )
    generate(config, path)
    user_of = {StreamGenerator.user_id(n): users[n] for n in range(config.users)}
    video_of = {StreamGenerator.video_id(n): videos[n] for n in range(config.videos)}
    out = []
    for r in read_records(path):
        if r.topic != config.events_topic:
            continue
        event = orjson.loads(r.value)  # type: ignore[arg-type]
        event["user_id"] = user_of[event["user_id"]]
        if "video_id" in event:
            event["video_id"] = video_of[event["video_id"]]
        out.append(Record(r.topic, -1, -1, None, event["user_id"].encode(), orjson.dumps(event)))
    return out


def _first_recommendation(bootstrap: str, topic: str, user: str, timeout_s: float) -> tuple[float, dict]:
    """The broker timestamp (s) and value of the first recommendation for `user`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for rec in read_topic(bootstrap, topic):
            if rec.key == user.encode() and rec.value:
                return (rec.timestamp_ms or 0) / 1000.0, orjson.loads(rec.value)
        time.sleep(0.5)
    raise TimeoutError(f"no recommendation for {user} within {timeout_s} s")


def _applied(metrics: dict[str, float]) -> float:
    """Events a worker applied (valid or absorbed as duplicates), dead letters left out."""
    return total(metrics, "reelstream_events_total") + total(metrics, "reelstream_duplicate_events_total")


def item_side_interactions(worker: Worker, timeout_s: float, expected: bool = True) -> int:
    """The worker's `reelstream_item_side_interactions` once its item side has ticked (set at each tick) and,
    when some are `expected`, holds some."""
    name = "reelstream_item_side_interactions"
    wait_for(lambda: name in worker.metrics() and (worker.metrics()[name] > 0 or not expected), timeout_s, "item side restored",
             [worker.log], worker.proc)  # fmt: skip
    return int(worker.metrics()[name])


def _rss_mib(worker: Worker) -> tuple[float, float]:
    """(current, peak) resident memory of the worker process, MiB (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{worker.proc.pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def pipeline_baselines(
    model_env: dict[str, str], events: int = PIPELINE_EVENTS, latency_events: int = 10_000
) -> dict[str, Any]:
    """`bench pipeline` as a user runs it, then on this bench's saved model (`model_env`: the worker settings
    that load it, with its index), once each: the baselines of the throughput ratios, from the same run (the
    machine's speed drifts), at the usual model and at equal model size."""
    from streams.settings import Settings

    kept = ("events_per_s", "worker_cpu_ms_per_1k_events", "worker_main_thread_cpu_ms_per_1k_events",
            "recommendations_per_1k_events", "offset_gaps", "build")
    out = {}
    for name, env in (("pipeline", {}), ("pipeline_same_model", model_env)):
        r = bench_pipeline(Settings(), events, latency_events, 1_000.0, PIPELINE_SEED, env=env)  # the CLI's rate
        out[name] = {k: r[k] for k in kept}
    return out


def bench_state(users: int, videos: int = 100_000, factors: int = 64, events: int = 20_000, seed: int = 0,
                timeout_s: float = 900.0, baseline: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Build, start, probe, kill -9, restart, probe, wait for the Gram restore, then a throughput run.
    `baseline` ({"events", "latency_events"} of `bench pipeline`): then `pipeline_baselines` and the ratios."""
    from streams.settings import Settings

    rng = random.Random(seed + 1)
    with LocalStack() as stack:
        model_dir = stack.workdir / "model"
        # IVF sized for the catalog (the defaults, nlist 4096 x 39 training vectors, stay exact below 160k).
        nlist = max(16, min(4096, videos // 100))
        stack.env.update({"REELSTREAM_RECS__MODEL_DIR": str(model_dir), "REELSTREAM_RECS__FACTORS": str(factors),
                          "REELSTREAM_INDEX__KIND": "ivf", "REELSTREAM_INDEX__NLIST": str(nlist),
                          "REELSTREAM_INDEX__NPROBE": str(max(4, nlist // 32))})  # fmt: skip
        settings = Settings()
        topic = settings.topics.recommendations
        data_dir = stack.workdir / "worker-data"
        started = time.monotonic()
        build_model(model_dir, videos, factors, seed, fitted=videos - new_videos(videos))
        child = multiprocessing.get_context("spawn").Process(
            target=build_users, args=(str(data_dir), users, videos, dict(stack.env), seed)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"building the store failed (exit {child.exitcode})")
        build_s = time.monotonic() - started
        stack.start_broker()
        produce = make_producer(stack.bootstrap)

        def probe(worker_started: float, n: int) -> tuple[float, dict, int]:
            """An event for a stored user: seconds from the worker's start to its recommendation, the
            recommendation, and how many rows the user's record then holds (stored + 1: read from disk)."""
            user = user_id(rng.randrange(users))
            produce.produce(settings.topics.events, key=user.encode(), value=_event(user, video_id(0), n, 1.8e9))
            produce.flush(30)
            at, rec = _first_recommendation(stack.bootstrap, topic, user, timeout_s)
            stored = last_values(stack.bootstrap, changelog(settings, USERS_TABLE)).get(orjson.dumps(user))
            return at - worker_started, rec, len(orjson.loads(stored)["events"]) if stored else 0

        first_start = time.time()
        worker = stack.launch_worker(data_dir=data_dir)
        first_s, _, _ = probe(first_start, 0)
        held_before = item_side_interactions(worker, timeout_s, new_videos(videos) > 0)
        worker.stop(signal.SIGKILL)
        restart = time.time()
        worker = stack.launch_worker(data_dir=data_dir)
        recovery_s, rec, rows = probe(restart, 1)
        wait_for(lambda: total(worker.metrics(), "reelstream_factors_restored_total") >= users, timeout_s,
                 "factors restored", [worker.log], worker.proc)  # fmt: skip
        restored_s = time.time() - restart
        held_after = item_side_interactions(worker, timeout_s, new_videos(videos) > 0)
        records = []
        for n in range(events):
            user = user_id(rng.randrange(users))
            records.append(Record(settings.topics.events, -1, -1, None, user.encode(), _event(user, video_id(rng.randrange(videos)), n + 2, 1.8e9 + n)))

        def item_side_behind() -> dict[str, float | None]:
            """How far the item side is behind when the events are applied: `interactions-by-video` messages past
            the worker's committed offsets (Faust commits every commit_interval_s, so up to that much is counted
            that was already applied), and the seconds until it has caught up (None: not within 120 s)."""
            def lag() -> int:
                return group_lag(stack.bootstrap, settings.app_id, settings.topics.interactions_by_video,
                                 settings.partitions)  # fmt: skip

            t0, behind = time.time(), lag()
            try:
                wait_for(lambda: lag() == 0, 120.0, "item side caught up", [worker.log], worker.proc, interval=0.5)
                caught_up: float | None = round(time.time() - t0, 1)
            except TimeoutError:
                caught_up = None
            return {"messages": behind, "caught_up_s": caught_up}

        def throughput(records: list[Record]) -> dict[str, Any]:
            """Events/s, the worker's CPU ms per 1,000 events (what does not depend on the machine's load): the
            whole process's and its main thread's (the event loop: what saturates), the users served per 1,000
            events, and the item side's backlog once they were applied (`item_side_behind`)."""
            n, before, cpu, main = len(records), worker.metrics(), worker.cpu_seconds(), worker.cpu_seconds(True)
            accounted, applied = consumed(before) + n, _applied(before) + n  # the counts once all are in
            feeder = Feeder(stack.bootstrap, records, None)
            t0 = time.time()
            feeder.start()
            wait_for(lambda: consumed(worker.metrics()) >= accounted, timeout_s, "events after recovery",
                     [worker.log], worker.proc, interval=0.5)  # fmt: skip
            # Applied, not just accounted for: `consumed` also counts dead letters, and an offset gap (records
            # the broker deleted unread: the embedded broker keeps 5 MiB per partition, and a lagging item side
            # loses `interactions-by-video` records that way) would otherwise pass for throughput.
            try:
                wait_for(lambda: _applied(worker.metrics()) >= applied, 60.0, "events applied",
                         [worker.log], worker.proc, interval=0.2)  # fmt: skip
            except TimeoutError:
                missing = applied - _applied(worker.metrics())
                raise RuntimeError(f"{missing:.0f} of {n} events were dead-lettered unread (the broker's retention"
                                   " dropped them): use fewer --events") from None
            # Ended as `bench pipeline`'s run ends (`run_ended_at`), so both sides of a ratio are timed alike: the last
            # output came before the polls above noticed by 2-6% of a one-event-per-user run, and after them in 3
            # runs of 3 on `bench pipeline`'s stream.
            polled = time.time()
            served = recommendations(worker.metrics()) - recommendations(before)
            cpu_ms, main_ms = (worker.cpu_seconds() - cpu) / n * 1e6, (worker.cpu_seconds(True) - main) / n * 1e6
            rate = n / (run_ended_at(stack.bootstrap, settings.topics, polled) - t0)
            return {"events_per_s": round(rate, 1), "worker_cpu_ms_per_1k_events": round(cpu_ms, 1),
                    "worker_main_thread_cpu_ms_per_1k_events": round(main_ms, 1),
                    "recommendations_per_1k_events": round(served / n * 1e3, 1), "item_side_lag": item_side_behind()}

        # First `bench pipeline`'s own stream (the baseline's, at its size), on stored users none of the runs
        # below touches: its users act in sessions, several times a micro-batch. Then one event per user, each
        # a user not yet served since the restart (the worst case for reading state).
        traffic_events = (baseline or {}).get("events", PIPELINE_EVENTS)
        touched, (n_users, n_videos) = {r.key for r in records}, population(traffic_events)
        fresh = [u for n in rng.sample(range(users), min(users, n_users + len(touched)))
                 if (u := user_id(n)).encode() not in touched]  # fmt: skip
        picked = [video_id(n) for n in rng.sample(range(videos), min(videos, n_videos))]
        traffic = pipeline_traffic(stack.workdir, traffic_events, fresh, picked, 1_800_000_100)  # after the probes
        mixed = throughput(traffic)
        cold = throughput(records)
        # The same users again, now in the worker's caches: what reading them from the store cost above.
        warm = throughput([Record(r.topic, -1, -1, None, r.key, r.value.replace(b"-new-", b"-again-"))  # type: ignore[union-attr]
                           for r in records])  # fmt: skip
        gaps = offset_gaps(worker.metrics())
        rss, peak = _rss_mib(worker)
        baselines = None
        if baseline is not None:
            worker.stop()  # its CPU to the baselines (the model directory stays until the stack is left)
            baselines = pipeline_baselines(dict(stack.env), **baseline)
    result = {
        "users": users,
        "videos": videos,
        "factors": factors,
        "rss_mib": round(peak, 1),  # the peak: recovery, the Gram restore and the throughput run included
        "rss_mib_at_end": round(rss, 1),
        "recovery_s": round(recovery_s, 2),
        "first_start_s": round(first_s, 2),
        "factors_restored_s": round(restored_s, 1),
        # `bench pipeline`'s own stream (sessions, event kinds, comments), its users mapped onto stored users
        # none of the other runs touches: the baselines' traffic, so the ratios compare the state, not the workload.
        "events_per_s_after_recovery": mixed.pop("events_per_s"),
        "pipeline_traffic": {"events": len(traffic), "users": len({r.key for r in traffic}), **mixed},
        # One event per stored user not yet served since the restart (the worst case for reading state: a user
        # served per event, against ~0.55 in `bench pipeline`'s stream), then the same users again (cached).
        "one_event_per_user": {"events": len(records), "users": len({r.key for r in records}),
                               "first_touch": cold, "same_users_again": warm},
        "probe_model_version": rec.get("model_version"),
        "probe_history_rows": rows,  # the stored user's 20 rows and the probe's: their state came from disk
        "store": settings.store,
        # (video, user) pairs of the videos no fit covers, as the worker held them before the kill and after
        "item_side_interactions": {"before_kill": held_before, "after_restart": held_after},
        "offset_gaps": gaps,  # records deleted unread by the embedded broker's cap (5 MiB per partition)
        "index": {"kind": "ivf", "nlist": nlist, "nprobe": max(4, nlist // 32)},
        "build_s": round(build_s, 1),
    }
    if baselines is not None:
        result["baselines"] = baselines

        def ratios(printed: float) -> dict[str, float]:
            """Of a printed rate to each baseline's (both rounded to 0.1 event/s): the JSON agrees with itself."""
            return {name: round(printed / b["events_per_s"], 3) for name, b in baselines.items()}

        result["events_per_s_ratio"] = ratios(result["events_per_s_after_recovery"])  # type: ignore[arg-type]
        cold["events_per_s_ratio"] = ratios(cold["events_per_s"])
    return result
