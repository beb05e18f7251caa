"""The synthetic stream: deterministic, valid, with the latent structure and proportions it promises."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from contracts.events import InvalidMessage, parse_event, parse_video_event
from lab.generator import FAULT_HEADER, FAULTS, CommentPool, GeneratorConfig, StreamGenerator, generate
from lab.recording import Record, read_records, write_records

SAMPLES = Path(__file__).resolve().parents[1] / "lab" / "samples"
LIMITS = {"max_bytes": 1_000_000, "max_text_chars": 5000}


@pytest.fixture(scope="module")
def pool() -> CommentPool:
    return CommentPool()


def _run(pool: CommentPool, **kw) -> tuple[list[Record], dict]:
    gen = StreamGenerator(GeneratorConfig(**{"users": 80, "videos": 120, "events": 2500, "seed": 3, **kw}), pool)
    return list(gen.records()), gen.truth()


def _fault(rec: Record) -> str | None:
    return dict(rec.headers).get(FAULT_HEADER, b"").decode() or None


def test_same_seed_same_bytes(pool: CommentPool, tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_records(tmp_path / f"{name}.jsonl", _run(pool, seed=seed, with_faults=True)[0])
    a, b, c = ((tmp_path / f"{n}.jsonl").read_bytes() for n in "abc")
    assert a == b and a != c


def test_every_event_validates_and_the_stream_is_consistent(pool: CommentPool) -> None:
    records, truth = _run(pool)
    assert sum(r.topic == "events" for r in records) == 2500
    stamps = [r.timestamp_ms for r in records]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    live: set[str] = set()
    deleted: set[str] = set()
    first_seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        if rec.topic == "videos":
            video = parse_video_event(rec.value, max_bytes=LIMITS["max_bytes"])
            assert rec.key == video.video_id.encode() and rec.timestamp_ms == round(video.ts * 1000)
            (live.add if video.type == "upload" else live.discard)(video.video_id)
            continue
        event = parse_event(rec.value, **LIMITS)
        assert rec.key == event.user_id.encode() and rec.timestamp_ms == round(event.ts * 1000)
        assert event.user_id not in deleted
        if event.type == "user_delete":
            deleted.add(event.user_id)
        elif event.type != "unlike":  # one may unlike a video that was removed since
            assert event.video_id in live, (i, event)
            first_seen.setdefault(event.video_id, i)
    assert sorted(deleted) == sorted(truth["deleted_users"])
    assert len(first_seen) > 60


def test_proportions_and_latent_structure(pool: CommentPool) -> None:
    records, truth = _run(pool)
    events = [orjson.loads(r.value) for r in records if r.topic == "events"]
    types = Counter(e["type"] for e in events)
    assert types["watch"] > 0.5 * len(events)
    assert types["like"] > types["share"] > types["unlike"] > 0
    assert types["skip"] > 0 and types["comment"] > 0 and types["user_delete"] >= 1
    videos = Counter(orjson.loads(r.value)["type"] for r in records if r.topic == "videos")
    assert videos["upload"] == 120 and videos["remove"] >= 1 and videos["block"] >= 1

    comments = truth["comments"]
    assert {c["lang"] for c in comments.values()} == {"en", "zh"}
    categories = Counter(c["category"] for c in comments.values())
    benign = categories["positive"] + categories["neutral"] + categories["negative"]
    assert benign > 0.6 * len(comments)
    assert categories["offensive"] > 0 and categories["spam"] > 0
    texts = {e["event_id"]: e for e in events if e["type"] == "comment"}
    assert set(texts) == set(comments)

    # Taste drives behaviour: in-taste watches are longer, skips mostly out of taste.
    ratios: dict[bool, list[float]] = defaultdict(list)
    skips = Counter()
    for e in events:
        if e["type"] not in ("watch", "skip"):
            continue
        in_taste = str(truth["video_cluster"][e["video_id"]]) in truth["user_taste"][e["user_id"]]
        if e["type"] == "watch":
            ratios[in_taste].append(min(1.0, e["watch_ms"] / e["duration_ms"]))
        else:
            skips[in_taste] += 1
    mean = {k: sum(v) / len(v) for k, v in ratios.items()}
    assert mean[True] > mean[False] + 0.3
    assert len(ratios[True]) > 3 * len(ratios[False])
    assert skips[False] > skips[True]


def test_faults_get_their_reasons(pool: CommentPool) -> None:
    records, truth = _run(pool, with_faults=True)
    assert sum(r.topic == "events" and _fault(r) is None for r in records) == 2500
    found = {}
    seen_values = []
    for rec in records:
        if rec.topic != "events":
            continue
        kind = _fault(rec)
        if kind == "duplicate":
            assert rec.value == seen_values[-1]
            found[kind] = None
            continue
        try:
            parse_event(rec.value, **LIMITS)
            assert kind is None
            seen_values.append(rec.value)
        except InvalidMessage as exc:
            found[kind] = exc.reason
    assert found == FAULTS
    assert truth["faults"] == FAULTS


def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data"):
        CommentPool(tmp_path / "nowhere")


def test_committed_sample_is_reproducible_and_complete(tmp_path: Path) -> None:
    config = GeneratorConfig(users=200, videos=300, events=4000, seed=7, with_faults=True)
    truth = generate(config, tmp_path / "demo.jsonl")
    assert (tmp_path / "demo.jsonl").read_bytes() == (SAMPLES / "demo.jsonl").read_bytes()
    assert orjson.loads((SAMPLES / "demo.truth.json").read_bytes()) == orjson.loads(orjson.dumps(truth))
    assert (SAMPLES / "demo.jsonl").stat().st_size < 2_000_000

    records = list(read_records(SAMPLES / "demo.jsonl"))
    kinds = Counter(_fault(r) for r in records if r.topic == "events")
    assert {k for k in kinds if k} == set(FAULTS)
    assert 3000 <= kinds[None] <= 5000
