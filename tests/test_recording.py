"""Record format round trips, and record/replay through a real (librdkafka mock) broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from lab.recording import Record, read_records, record, replay, write_records

SAMPLES = [
    Record("events", 0, 0, 1_700_000_000_000, b"u1", b'{"type":"watch"}', []),
    Record("events", 1, 5, 1_700_000_000_001, None, "评论 ✓".encode(), [("trace", b"abc"), ("bin", b"\x00\xff")]),
    Record("events", 2, 7, None, b"\xff\xfe", b"\x80\x81 not utf-8", [("empty", b""), ("none", None)]),
    Record("videos", 0, 9, 1_700_000_000_002, b"v1", None, []),
]


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_write_read_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_records(path, SAMPLES) == len(SAMPLES)
    assert list(read_records(path)) == SAMPLES


def test_format_is_text_where_possible(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, SAMPLES)
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines[0]["key"] == "u1" and lines[0]["value"] == '{"type":"watch"}'
    assert lines[1]["key"] is None and lines[1]["value"] == "评论 ✓"
    assert lines[1]["headers"] == [["trace", "YWJj"], ["bin", "AP8="]]
    assert "key" not in lines[2] and lines[2]["key_b64"] == "//4=" and "value_b64" in lines[2]
    assert lines[3]["value"] is None


def test_gzip_is_deterministic(tmp_path: Path) -> None:
    write_records(tmp_path / "a.jsonl.gz", SAMPLES)
    time.sleep(1.1)  # a gzip header with the current mtime would differ now
    write_records(tmp_path / "b.jsonl.gz", SAMPLES)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_bad_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"topic":"t","partition":0,"offset":0,"timestamp_ms":1,"key":null,"value":null}\nnot json\n')
    with pytest.raises(ValueError, match=":2:"):
        list(read_records(path))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The project's embedded broker in a subprocess (app topics plus two extra ones)."""
    addr = tmp_path_factory.mktemp("broker") / "addr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reelstream.cli", "broker", "--addr-file", str(addr), "--topic", "other:2",
         "--topic", "empty:3"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not addr.exists():
            assert proc.poll() is None, "broker exited"
            assert time.monotonic() < deadline, "broker did not start"
            time.sleep(0.05)
        yield addr.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def _messages(n: int) -> list[Record]:
    recs = []
    for i in range(n):
        topic = "videos" if i % 10 == 0 else "events"
        key = None if i % 17 == 3 else f"k{i % 7}".encode()
        value = bytes([0xFF, i % 256]) if i % 13 == 5 else orjson.dumps({"i": i, "t": "评论"})
        headers = [("i", str(i).encode()), ("raw", b"\x00\x01")] if i % 3 == 0 else []
        recs.append(Record(topic, -1, -1, 1_767_225_600_000 + i, key, value, headers))
    return recs


def _comparable(recs: list[Record]) -> Counter:
    return Counter((r.topic, r.key, r.value, r.timestamp_ms, tuple(r.headers)) for r in recs)


@pytest.mark.integration
def test_replay_then_record_round_trip(broker: str, tmp_path: Path) -> None:
    source = _messages(300)
    write_records(tmp_path / "in.jsonl", source)
    stats = replay(broker, tmp_path / "in.jsonl")
    assert (stats.sent, stats.failed) == (300, 0)
    assert stats.by_topic == {"events": 270, "videos": 30}

    recorded = []
    for topic in ("events", "videos"):
        started = time.monotonic()
        rs = record(broker, topic, tmp_path / f"{topic}.jsonl.gz", timeout_s=10)
        assert rs.stopped_by == "end" and time.monotonic() - started < 5  # at the high watermark, not the timeout
        recorded += list(read_records(tmp_path / f"{topic}.jsonl.gz"))
    assert _comparable(recorded) == _comparable(source)

    # Per key, order is kept (one key, one partition); offsets are the broker's.
    events = [r for r in recorded if r.topic == "events" and r.key == b"k1"]
    assert [orjson.loads(r.value)["i"] for r in events if r.value[:1] == b"{"] == sorted(
        orjson.loads(r.value)["i"] for r in events if r.value[:1] == b"{"
    )
    assert {r.partition for r in recorded if r.topic == "events"} <= {0, 1, 2, 3}


@pytest.mark.integration
def test_record_stops_by_count_and_on_empty_topic(broker: str, tmp_path: Path) -> None:
    write_records(tmp_path / "in.jsonl", _messages(20))
    assert replay(broker, tmp_path / "in.jsonl", topic="other").by_topic == {"other": 20}
    rs = record(broker, "other", tmp_path / "five.jsonl", count=5)
    assert (rs.count, rs.stopped_by) == (5, "count")
    assert len(list(read_records(tmp_path / "five.jsonl"))) == 5
    rs = record(broker, "empty", tmp_path / "none.jsonl", timeout_s=10)
    assert (rs.count, rs.stopped_by, rs.partitions) == (0, "end", 3)
    # More asked than there is: stops after the idle timeout.
    started = time.monotonic()
    rs = record(broker, "other", tmp_path / "all.jsonl", count=100, timeout_s=1)
    assert (rs.count, rs.stopped_by) == (20, "idle") and time.monotonic() - started < 5


@pytest.mark.integration
def test_replay_rate_limit(broker: str, tmp_path: Path) -> None:
    write_records(tmp_path / "in.jsonl", _messages(40))
    stats = replay(broker, tmp_path / "in.jsonl", topic="other", rate=100)
    assert stats.sent == 40 and 0.35 <= stats.seconds < 3


@pytest.mark.integration
def test_cli_replay_and_record(broker: str, tmp_path: Path) -> None:
    write_records(tmp_path / "in.jsonl", _messages(10))
    env = {**os.environ, "REELSTREAM_BOOTSTRAP_SERVERS": broker}
    cli = [str(Path(sys.executable).parent / "reelstream")]
    out = subprocess.run([*cli, "replay", str(tmp_path / "in.jsonl"), "--topic", "cli"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("replayed 10 messages (cli: 10), 0 failed")
    out = subprocess.run([*cli, "record", "cli", str(tmp_path / "out.jsonl"), "--bootstrap", broker, "--timeout", "5"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "recorded 10 messages from cli" in out.stdout
    assert _comparable(list(read_records(tmp_path / "out.jsonl"))) == _comparable(
        [Record("cli", -1, -1, r.timestamp_ms, r.key, r.value, r.headers) for r in _messages(10)]
    )
