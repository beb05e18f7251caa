"""`reelstream eval recs --via-kafka`: the prequential evaluation of the DEPLOYED recommender.

The dataset is replayed in time order through the embedded broker into real worker processes (and the
batch trainer process), at least one worker is killed with SIGKILL and replaced mid-replay, and the
streaming model is scored from what the workers actually emitted on `recommendations`. The popularity
baselines are computed here, in the harness, over the same events, in the same run.

Replay protocol
- Events carry the dataset's timestamps (`ts`), so every time-dependent policy in the workers and the trainer
  (history decay, popularity half-life, refit cadence) runs on event time; wall-clock replay is compressed.
  The dataset's `DATASET_OVERRIDES` (models/recs/evaluate.py) reach the processes as REELSTREAM_RECS__*.
  Compression does not favour the streaming model: the trainer's refits are made instantaneous in event time
  by the barrier below (as the in-process replay does; live, a refit of seconds against a cadence of hours
  is nearly so), and the one wall-clock cadence left, the item side's refresh of new videos every
  `item_refresh_interval_s`, covers far more events per refresh here than live (MovieLens-100K's 100k
  ratings span 7 months), so the streaming side's new-video vectors are staler per event than they would
  be. The waits that only set the replay's speed are shortened (REPLAY_SPEED).
- Events are sent in chunks, keyed by user_id (murmur2, as every producer here), and each chunk is flushed.
  Warm-up (the first `warmup` fraction of groups): learned, not evaluated, chunks of up to WARMUP_CHUNK
  groups. Evaluated part: a chunk is cut before a user would appear twice in it (and at EVAL_CHUNK groups),
  so every evaluated group is scored against a recommendation that already reflects all of that user's
  earlier interactions, as the in-process evaluation (batch_size 1 for ml100k) does.
- Before a chunk is sent, each of its evaluated groups whose video is not already in the user's history
  (those are skipped, as evaluate.py does) is scored against the user's LATEST recommendation received so
  far: a background thread consumes `recommendations` from the start (no consumer group). A user with no
  recommendation yet (or a tombstone) has no list: scored on decayed popularity (what a product shows a user
  without a list, as the in-process evaluation does) and counted as unknown, as is a popularity-v1 list. A scored recommendation whose
  source event is neither the user's last sent event nor (served again after a new version) their latest
  stored row is counted as `stale_recs` (should be 0). The popularity baselines (all-time counts;
  popularity-v1 with the effective half-life and the event weights) are scored and then learn group by
  group, exactly as in the in-process evaluation.
- After a chunk is sent: wait until, for every user of the chunk, a recommendation whose `source_event_id`
  is the last event sent for that user has arrived (WAIT_S, with the processes' log tails in the error).
- Trainer barrier (a refit in a live system takes seconds against a cadence of hours or days; the compressed
  replay must favour neither model): after the chunk's recommendations arrived, read the high watermarks of
  the users table's changelog (every partition), then wait until the trainer's /metrics shows
  `reelstream_trainer_changelog_offset{partition="P"}` >= that watermark for every partition and
  `reelstream_trainer_busy` == 0. If `reelstream_trainer_refits_total` grew, also wait until every live
  worker's `reelstream_build_info{recommender=...}` is the trainer's latest version
  (`reelstream_trainer_model_info{model_version=...}` == 1), sleep APPLY_S so its vectors are applied, then
  wait until every worker has served its users again with it (`reelstream_refresh_pending_users` == 0) and
  this consumer has read those recommendations (to the topic's high watermarks).
- Restarts: at `restarts` evenly spaced points of the evaluated part, after a chunk's barrier, one worker
  (round robin) is killed with SIGKILL and a new one started. Before the next chunk is scored, the app's
  input topics must be committed to their end (the new worker re-processed what the dead one had not
  committed) and this consumer must have read `recommendations` to its end, so no re-emitted older
  recommendation is taken for the latest one.
- Embedded broker retention (lab/broker.py): 5 MiB per partition, not compacted. The users changelog
  carries each touched user's whole history per micro-batch, so a long replay outgrows it and a restarted
  worker recovers only the users written within the retained tail (`changelog_pruned_at_restart`; with one
  worker, `users_lost_at_restart`: users sent so far that it did not recover). More `partitions` raise the
  capacity: MovieLens-100K writes ~280 MB of changelog by the middle of the evaluated part, more than even
  64 partitions (335 MB, unevenly filled) keep. Offset gaps on the agents' inputs (dead-lettered as
  `offset_gap`) are counted from the DLQ topic and the workers' metrics and reported.
"""

from __future__ import annotations

import collections
import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from contracts.history import HistoryRow
from lab.local import log_tails, offset_gaps
from models.recs.evaluate import DATASET_OVERRIDES, SYNTHETIC_VIDEO_HALF_LIFE_S, TUNED, Group, K, Tally, load_groups
from streams.settings import Settings

WARMUP_CHUNK = 2000  # groups per warm-up chunk
EVAL_CHUNK = 500  # at most, groups per evaluated chunk
WAIT_S = 180.0  # for a chunk's recommendations, a barrier, a restart
APPLY_S = 0.2  # after every worker reports the trainer's new version
DURATION_MS = 100_000  # of every watched video: watch_ms = ratio * DURATION_MS
MODELS = ("streaming", "popularity", "popularity_decayed")
# Wall-clock waits of the processes that only set how fast the replay goes, not what is learned: a chunk is
# one round trip (measured here, one worker: 65 ms per chunk with the defaults, 11 ms with these).
REPLAY_SPEED = {
    "REELSTREAM_BATCH_MAX_WAIT_S": "0.002",  # a micro-batch waits this long for more events (default 0.05)
    "REELSTREAM_FETCH_MAX_WAIT_MS": "3",  # the embedded broker holds an empty fetch this long (default 20)
    # Not speed but room: the users changelog carries each touched user's whole history per micro-batch, and
    # the embedded broker keeps 5 MiB per partition; compressed, a restart recovers every user.
    "REELSTREAM_OUTPUT_COMPRESSION": "gzip",
}
# Synthetic sizes when none are given: small enough for a test (a few thousand events, ~30 s).
SYNTHETIC_SMALL = {"users": 300, "videos": 200, "events": 3000}


# --- events -------------------------------------------------------------------------------------------
def event_of(user_id: str, row: HistoryRow) -> dict[str, Any]:
    """The `events` message (contracts/events.py) that the worker stores as `row`."""
    event: dict[str, Any] = {
        "schema_version": 1, "event_id": row.event_id, "type": row.kind, "user_id": user_id,
        "video_id": row.video_id, "ts": float(row.ts),
    }  # fmt: skip
    if row.kind == "watch":
        event["watch_ms"] = round(min(1.0, max(0.0, row.ratio)) * DURATION_MS)
        event["duration_ms"] = DURATION_MS
    elif row.kind not in ("like", "unlike", "share", "skip"):
        raise ValueError(f"cannot replay a {row.kind!r} interaction")
    return event


def chunks(groups: Sequence[Group], warm_n: int) -> Iterator[tuple[int, int]]:
    """[start, end) of each chunk: warm-up chunks of up to WARMUP_CHUNK groups, ending at warm_n; then
    evaluated chunks, each cut before a user would appear in it twice (and at EVAL_CHUNK groups)."""
    i = 0
    while i < warm_n:
        end = min(i + WARMUP_CHUNK, warm_n)
        yield i, end
        i = end
    while i < len(groups):
        users: set[str] = set()
        end = i
        while end < len(groups) and end - i < EVAL_CHUNK and groups[end].user_id not in users:
            users.add(groups[end].user_id)
            end += 1
        yield i, end
        i = end


# --- the recommendations consumer ---------------------------------------------------------------------
class RecsListener(threading.Thread):
    """Reads `recommendations` from the beginning of every partition (no group) into the latest
    recommendation per user, and tells `wait_for_sources` when expected source events have been served."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True, name="recs-listener")
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        from streams.security import client_config

        self.consumer = Consumer(client_config(bootstrap, **{
            "group.id": "reelstream-recs-replay",  # required by the client; never joined (assign only)
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,  # the embedded broker holds an empty fetch for its whole wait
            "fetch.error.backoff.ms": 5,
        }))  # fmt: skip
        parts = sorted(self.consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.partitions = parts
        self.latest: dict[str, dict | None] = {}  # user -> latest recommendation (None: a tombstone)
        self.positions: dict[int, int] = {}  # partition -> next offset to read
        self.received = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}
        self._done = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                first = self.consumer.poll(0.1)  # consume() would wait its whole timeout for a full batch
                if first is None:
                    continue
                msgs = [first, *self.consumer.consume(num_messages=2000, timeout=0)]
                with self._lock:
                    for msg in msgs:
                        if msg.error() is not None:
                            self.errors.append(str(msg.error()))
                            continue
                        self.positions[msg.partition()] = msg.offset() + 1
                        self.received += 1
                        user = msg.key().decode()
                        rec = orjson.loads(msg.value()) if msg.value() is not None else None
                        self.latest[user] = rec
                        if rec is not None and self._pending.get(user) == rec["source_event_id"]:
                            del self._pending[user]
                    if not self._pending:
                        self._done.set()
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def source(self, user: str) -> str | None:
        rec = self.latest.get(user)
        return None if rec is None else rec["source_event_id"]

    def wait_for_sources(self, expected: dict[str, str], timeout: float, what: str, logs: Iterable[Path] = (),
                         procs: Sequence[Any] = ()) -> None:  # fmt: skip
        """Until, for each user, a recommendation with `expected[user]` as source event has arrived."""
        with self._lock:
            self._pending = {u: e for u, e in expected.items() if self.source(u) != e}
            if self._pending:
                self._done.clear()
            else:
                self._done.set()
        deadline = time.monotonic() + timeout
        while not self._done.wait(0.5):
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                with self._lock:
                    missing = len(self._pending)
                    example = next(iter(self._pending.items()), None)
                why = f"process exited with {dead[0].returncode}" if dead else f"not after {timeout:.0f} s"
                raise TimeoutError(f"{what}: {why}; {missing} users not served yet (e.g. {example})\n{log_tails(logs)}")

    def read_to(self, highs: dict[int, int]) -> bool:
        with self._lock:
            return all(self.positions.get(p, 0) >= h for p, h in highs.items())


# --- metrics ------------------------------------------------------------------------------------------
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def labels(key: str) -> dict[str, str]:
    """The labels of a scraped sample key ('name{a="x",b="y"}' -> {'a': 'x', 'b': 'y'})."""
    return dict(_LABEL.findall(key[key.find("{") + 1 :])) if "{" in key else {}


def samples(metrics: dict[str, float], name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels(k), v) for k, v in metrics.items() if k == name or k.startswith(name + "{")]


def served_version(metrics: dict[str, float]) -> str | None:
    """The recommender version in a worker's reelstream_build_info."""
    return next((lab["recommender"] for lab, _ in samples(metrics, "reelstream_build_info") if "recommender" in lab),
                None)  # fmt: skip


def trainer_version(metrics: dict[str, float]) -> str | None:
    return next((lab.get("model_version") for lab, v in samples(metrics, "reelstream_trainer_model_info") if v == 1),
                None)  # fmt: skip


def trainer_caught_up(metrics: dict[str, float], highs: dict[int, int]) -> bool:
    """The trainer has read the users changelog up to `highs` and is not fitting."""
    if not metrics or metrics.get("reelstream_trainer_busy", 1.0) != 0:
        return False
    offsets = {int(lab["partition"]): v for lab, v in samples(metrics, "reelstream_trainer_changelog_offset")}
    return all(offsets.get(p, 0) >= h for p, h in highs.items())


# --- the run ------------------------------------------------------------------------------------------
@dataclass
class _Run:
    tallies: dict[str, Tally] = field(default_factory=lambda: {name: Tally() for name in MODELS})
    versions: collections.Counter = field(default_factory=collections.Counter)
    stale: int = 0
    stale_examples: list[dict[str, Any]] = field(default_factory=list)
    skipped_seen: int = 0
    explained: list[int] = field(default_factory=lambda: [0, 0])  # scored ALS items, and those naming a video
    restarts: int = 0
    restart_s: list[float] = field(default_factory=list)
    changelog_pruned: list[bool] = field(default_factory=list)
    users_lost: list[int] = field(default_factory=list)
    dlq_of_killed: dict[str, float] = field(default_factory=dict)
    refits_seen: float = 0.0
    barrier_s: float = 0.0


def stack_env(dataset: str, partitions: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """REELSTREAM_* for the broker, workers and trainer: the partition count, the dataset's overrides and
    REPLAY_SPEED unless this process's environment sets them; `extra` wins over all of them."""
    import os

    env = {k: v for k, v in REPLAY_SPEED.items() if k not in os.environ}
    env["REELSTREAM_PARTITIONS"] = str(partitions)
    for key, value in DATASET_OVERRIDES[dataset].items():
        env[f"REELSTREAM_RECS__{key.upper()}"] = str(value)
    return {**env, **(extra or {})}


def settings_under(env: dict[str, str]) -> Settings:
    """Settings as a process started with `env` on top of this one's environment reads them."""
    import os

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_via_kafka(
    dataset: str,
    *,
    users: int = SYNTHETIC_SMALL["users"],
    videos: int = SYNTHETIC_SMALL["videos"],
    events: int = SYNTHETIC_SMALL["events"],
    seed: int = 0,
    warmup: float = 0.2,
    workers: int = 1,
    restarts: int = 1,
    partitions: int = 4,
    with_trainer: bool = True,
    env: dict[str, str] | None = None,
    wait_s: float = WAIT_S,
    progress: Callable[[str], None] | None = None,
    video_half_life_s: float = SYNTHETIC_VIDEO_HALF_LIFE_S,
) -> dict[str, Any]:
    """The replay described in the module docstring; returns the JSON-ready result. `env`: more REELSTREAM_*
    settings for every process; `with_trainer=False`: workers only (streaming without refits);
    `progress`: called with a line now and then (e.g. to print it on stderr); `video_half_life_s`: the
    synthetic stream's content lifecycle (models.recs.evaluate.synthetic_events)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    from lab.chaos import lag_by_partition, uncommitted
    from lab.local import LocalStack, total, wait_for
    from lab.recording import read_topic
    from models.recs.confidence import append, event_weight
    from models.recs.popularity import PopularityRecommender
    from streams.producer import make_producer, produce
    from streams.security import client_config
    from streams.topics import USERS_TABLE, changelog

    started = time.perf_counter()
    groups = load_groups(dataset, users, videos, events, seed, video_half_life_s)
    env = stack_env(dataset, partitions, env)
    settings = settings_under(env)
    recs, t = settings.recs, settings.topics
    warm_n = int(len(groups) * warmup)
    restart_at = [warm_n + r * (len(groups) - warm_n) // (restarts + 1) for r in range(1, restarts + 1)]
    pop_all = PopularityRecommender(math.inf)
    pop_decayed = PopularityRecommender(recs.popularity_half_life_s)
    histories: dict[str, list[HistoryRow]] = {}
    last_sent: dict[str, str] = {}  # user -> last event_id sent
    run = _Run()
    say = progress or (lambda line: None)

    with LocalStack(env=env) as stack:
        stack.start_broker()
        trainer = stack.start_trainer(timeout=wait_s) if with_trainer else None
        for _ in range(workers):
            stack.start_worker(timeout=wait_s)
        listener = RecsListener(stack.bootstrap, t.recommendations)
        listener.start()
        producer = make_producer(stack.bootstrap, **{"linger.ms": 1})
        admin = AdminClient(client_config(stack.bootstrap))
        users_log = changelog(settings, USERS_TABLE)

        def live() -> list[Any]:
            return [w for w in stack.workers if w.proc.poll() is None]

        def logs() -> list[Path]:
            return [w.log for w in stack.workers] + ([trainer.log] if trainer is not None else [])

        def procs() -> list[Any]:
            return [w.proc for w in live()] + ([trainer.proc] if trainer is not None else [])

        def watermarks(topic: str, low: bool = False) -> dict[int, int]:
            """Every partition's high (or low) watermark, in one request."""
            spec = OffsetSpec.earliest() if low else OffsetSpec.latest()
            asked = admin.list_offsets({TopicPartition(topic, p): spec for p in range(settings.partitions)},
                                       request_timeout=10)  # fmt: skip
            return {tp.partition: f.result().offset for tp, f in asked.items()}

        def score(g: Group, seen: set[str]) -> None:
            rec = listener.latest.get(g.user_id)
            if rec is None:  # no event yet, so no list: what a product shows then, as the in-process replay
                run.tallies["streaming"].add(pop_decayed.recommend(seen, K), g.video_id, True)
            else:
                placed = rec["model_version"] != PopularityRecommender.model_version
                run.tallies["streaming"].add([(i["video_id"], i["score"]) for i in rec["items"]], g.video_id, not placed)
                run.versions[rec["model_version"]] += 1
                if placed:  # ALS's items (not exploration slots): how many name videos of the history
                    ranked = [i for i in rec["items"] if i.get("reason") != "explore"]
                    run.explained[0] += len(ranked)
                    run.explained[1] += sum(1 for i in ranked if i.get("because"))
                # Current: served for the user's last sent event, or served again after a new version (its
                # source then is the latest stored row in time order).
                h = histories.get(g.user_id)
                current = (last_sent.get(g.user_id), h[-1].event_id if h else None)
                if rec["source_event_id"] not in current:
                    run.stale += 1
                    if len(run.stale_examples) < 5:  # what a stale list was, to tell a race from a lost event
                        run.stale_examples.append({
                            "user_id": g.user_id, "source_event_id": rec["source_event_id"],
                            "last_sent": current[0], "latest_row": current[1], "model_version": rec["model_version"],
                            "generated_at": rec["generated_at"], "restarts_before": run.restarts,
                        })  # fmt: skip
            run.tallies["popularity"].add(pop_all.recommend(seen, K), g.video_id, False)
            run.tallies["popularity_decayed"].add(pop_decayed.recommend(seen, K), g.video_id, False)

        def learn(g: Group) -> None:
            histories[g.user_id] = append(histories.get(g.user_id, []), g.interactions, recs.history_max_events)
            pop_all.observe(g.video_id, 1.0, g.ts)
            for i in g.interactions:
                pop_decayed.observe(i.video_id, max(0.0, event_weight(i, recs.weights)), i.ts)

        def trainer_barrier() -> None:
            begun = time.monotonic()
            highs = watermarks(users_log)

            def caught_up() -> dict[str, float] | None:
                m = trainer.metrics()
                return m if trainer_caught_up(m, highs) else None

            m = wait_for(caught_up, wait_s, "trainer reading the users changelog", logs(), trainer.proc, 0.005)
            refits = total(m, "reelstream_trainer_refits_total")
            if refits > run.refits_seen:
                run.refits_seen = refits
                version = trainer_version(m)
                wait_for(lambda: all(served_version(w.metrics()) == version for w in live()), wait_s,
                         f"workers serving the trainer's {version}", logs(), trainer.proc, 0.02)  # fmt: skip
                time.sleep(APPLY_S)
                # Each worker serves its users again with the new version: those lists are the latest.
                wait_for(lambda: all(w.metrics().get("reelstream_refresh_pending_users", 0) == 0 for w in live()),
                         wait_s, "workers serving their users again", logs(), trainer.proc, 0.02)  # fmt: skip
                highs = watermarks(t.recommendations)
                wait_for(
                    lambda: listener.read_to(highs), wait_s, "refreshed recommendations read", logs(), interval=0.01
                )
            run.barrier_s += time.monotonic() - begun

        def restart() -> None:
            begun = time.monotonic()
            victims = live()
            victim = victims[run.restarts % len(victims)]
            run.changelog_pruned.append(any(low > 0 for low in watermarks(users_log, low=True).values()))
            for k, v in victim.metrics().items():  # what it dead-lettered, before its counters go with it
                if k.startswith("reelstream_dlq_messages_total"):
                    run.dlq_of_killed[k] = run.dlq_of_killed.get(k, 0.0) + v
            victim.stop(signal.SIGKILL)
            stack.start_worker(timeout=wait_s, loglevel="INFO")  # its rebalance and recovery, in a failure's tail
            # The new worker re-processes what the dead one had not committed; then every recommendation it
            # re-emitted must be read before the next chunk is scored.
            try:
                wait_for(lambda: uncommitted(stack.bootstrap, settings) == 0, wait_s, "inputs committed after restart",
                         logs(), interval=0.2)  # fmt: skip
            except TimeoutError as e:
                stuck = {k: v for k, v in lag_by_partition(stack.bootstrap, settings).items() if v}
                owned = {w.log.name: sorted(k for k in w.metrics() if "consumer_lag_messages" in k) for w in live()}
                raise TimeoutError(f"{e}\nuncommitted: {stuck}\nreported lag series: {owned}") from None
            highs = watermarks(t.recommendations)
            wait_for(lambda: listener.read_to(highs), wait_s, "recommendations read after restart", logs())
            run.restarts += 1
            run.restart_s.append(round(time.monotonic() - begun, 1))
            say(f"restart {run.restarts}: {run.restart_s[-1]} s, users changelog pruned: {run.changelog_pruned[-1]}")

        def count_lost() -> None:
            """After the first chunk a new worker served (its tables recovered by then): with one worker, which
            holds every partition, the users it holds against those it was sent."""
            if len(live()) == 1:
                held = live()[0].metrics().get("reelstream_users", 0.0)
                run.users_lost.append(len(histories) - int(held))
                say(f"users lost at restart {run.restarts}: {run.users_lost[-1]} of {len(histories)}")

        try:
            next_restart, restarted, last_note = 0, False, time.monotonic()
            for n_chunks, (start, end) in enumerate(chunks(groups, warm_n), 1):
                chunk = groups[start:end]
                expected: dict[str, str] = {}
                for g in chunk:
                    if start >= warm_n:
                        seen = {r.video_id for r in histories.get(g.user_id, ())}
                        if g.video_id in seen:
                            run.skipped_seen += 1
                        else:
                            score(g, seen)
                    learn(g)
                    for i in g.interactions:
                        produce(producer, t.events, orjson.dumps(event_of(g.user_id, i)), g.user_id.encode())
                    expected[g.user_id] = g.interactions[-1].event_id
                if producer.flush(60):
                    raise RuntimeError("events not delivered to the broker within 60 s")
                last_sent.update(expected)
                listener.wait_for_sources(
                    expected, wait_s, f"recommendations for groups {start}-{end}", logs(), procs()
                )
                if trainer is not None:
                    trainer_barrier()
                if restarted:
                    count_lost()
                restarted = False
                while next_restart < len(restart_at) and end >= restart_at[next_restart]:
                    restart()
                    next_restart, restarted = next_restart + 1, True
                if time.monotonic() - last_note > 30:
                    last_note = time.monotonic()
                    hr = run.tallies["streaming"].as_dict()["hr@10"]
                    say(f"{end}/{len(groups)} groups, {n_chunks} chunks, streaming HR@10 {hr}, "
                        f"{time.perf_counter() - started:.0f} s")  # fmt: skip
            if listener.errors:
                raise RuntimeError(f"recommendations consumer errors: {listener.errors[:3]}")
            final = [w.metrics() for w in live()]
            refits = total(trainer.metrics(), "reelstream_trainer_refits_total") if trainer is not None else 0.0
            dead = collections.Counter(orjson.loads(r.value)["reason"] for r in read_topic(stack.bootstrap, t.dlq))
        finally:
            listener.stop()
    dlq_metric = dict(run.dlq_of_killed)
    for m in final:
        for k, v in m.items():
            if k.startswith("reelstream_dlq_messages_total"):
                dlq_metric[k] = dlq_metric.get(k, 0.0) + v
    catalog = len({g.video_id for g in groups})
    result: dict[str, Any] = {name: tally.as_dict(catalog) for name, tally in run.tallies.items()}
    explained, scored = run.explained[1], run.explained[0]
    result["streaming"]["explained_share"] = round(explained / scored, 4) if scored else 0.0
    result.update(
        events=run.tallies["streaming"].n,
        replayed=len(groups),
        seconds=round(time.perf_counter() - started, 1),
        dataset=dataset,
        settings={k: getattr(recs, k) for k in TUNED}
        | {
            "weights": recs.weights.model_dump(),
            "warmup": warmup,
            "warmup_chunk": WARMUP_CHUNK,
            "eval_chunk": EVAL_CHUNK,
            "partitions": settings.partitions,
            "env": env,
        }
        | ({"video_half_life_s": video_half_life_s} if dataset == "synthetic" else {}),
        via_kafka=True,
        restarts=run.restarts,
        workers=workers,
        bootstrap=False,
        refits=int(refits),
        model_versions=len(run.versions),
        popularity_served=run.versions.get(PopularityRecommender.model_version, 0),
        stale_recs=run.stale,
        stale_examples=run.stale_examples,
        skipped_seen=run.skipped_seen,
        dead_letters=int(sum(dlq_metric.values())),
        dead_letters_by_reason=dict(dead),
        offset_gaps=max(offset_gaps(dlq_metric), dead.get("offset_gap", 0)),
        changelog_pruned_at_restart=any(run.changelog_pruned),
        users_lost_at_restart=run.users_lost if len(run.users_lost) == run.restarts else None,
        restart_seconds=run.restart_s,
        trainer_barrier_seconds=round(run.barrier_s, 1),
        trainer=trainer is not None,
    )
    return result
