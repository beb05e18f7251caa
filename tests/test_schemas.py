"""Contracts: valid events parse, every kind of bad input maps to its DLQ reason, schemas publish."""

from __future__ import annotations

import json

import jsonschema
import pytest

from contracts.events import REASONS, InvalidMessage, json_schemas, parse_event, parse_video_event

OK = {"schema_version": 1, "event_id": "e1", "user_id": "u1", "video_id": "v1", "ts": 1.7e9}


def _parse(obj_or_bytes):
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return parse_event(raw, max_bytes=10_000, max_text_chars=100)


@pytest.mark.parametrize(
    "extra",
    [
        {"type": "watch", "watch_ms": 3000, "duration_ms": 10000},
        {"type": "like"},
        {"type": "unlike"},
        {"type": "share"},
        {"type": "skip"},
        {"type": "comment", "text": "nice", "lang": "en"},
        {"type": "comment", "text": "很好"},
    ],
)
def test_valid_events_parse(extra):
    event = _parse({**OK, **extra})
    assert event.type == extra["type"] and event.user_id == "u1"


def test_user_delete_needs_no_video():
    event = _parse({"schema_version": 1, "event_id": "d", "user_id": "u1", "ts": 1.0, "type": "user_delete"})
    assert event.type == "user_delete"


def test_watch_ratio_is_capped():
    assert _parse({**OK, "type": "watch", "watch_ms": 50, "duration_ms": 10}).ratio == 1.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe\x00", "bad_encoding"),
        (b"{not json", "bad_json"),
        (b"[1, 2]", "not_an_object"),
        (None, "bad_json"),
        (b"x" * 20_000, "too_large"),
        ({**OK, "type": "teleport"}, "unknown_type"),
        ({**OK}, "missing_field"),
        ({**OK, "type": "like", "schema_version": 2}, "unknown_schema_version"),
        ({k: v for k, v in OK.items() if k != "video_id"} | {"type": "like"}, "missing_field"),
        ({**OK, "type": "like", "user_id": 7}, "bad_field"),
        ({**OK, "type": "like", "ts": 1e300}, "bad_field"),
        ({**OK, "type": "like", "event_id": ""}, "bad_field"),
        ({**OK, "type": "watch", "watch_ms": -1, "duration_ms": 10}, "bad_field"),
        ({**OK, "type": "watch", "watch_ms": 1, "duration_ms": 0}, "bad_field"),
        ({**OK, "type": "comment", "text": "a" * 101}, "text_too_long"),
        ({**OK, "type": "comment", "text": "hi", "lang": "fr"}, "bad_field"),
        ({**OK, "type": "like", "ts": True}, "bad_field"),
        ({**OK, "type": "watch", "watch_ms": "12", "duration_ms": 100}, "bad_field"),
        ({**OK, "type": "like", "schema_version": True}, "unknown_schema_version"),
    ],
)
def test_invalid_input_has_a_reason(raw, reason):
    with pytest.raises(InvalidMessage) as exc:
        _parse(raw) if raw is not None else parse_event(None, max_bytes=10, max_text_chars=10)
    assert exc.value.reason == reason and reason in REASONS


def test_video_events():
    v = parse_video_event(b'{"video_id": "v1", "type": "block", "ts": 5, "tags": ["a"]}', max_bytes=1000)
    assert v.type == "block"
    with pytest.raises(InvalidMessage) as exc:
        parse_video_event(b'{"video_id": "v1", "type": "explode", "ts": 5}', max_bytes=1000)
    assert exc.value.reason == "bad_field"


def test_published_json_schemas_validate_real_messages():
    schemas = json_schemas()
    assert set(schemas) == {"events", "videos", "recommendations", "moderation-flags", "events.dlq", "review-queue",
                            "review-decisions", "appeal-outcomes", "statements-of-reasons"}
    jsonschema.validate({**OK, "type": "like"}, schemas["events"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**OK, "type": "teleport"}, schemas["events"])


def test_committed_schemas_are_current():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    for name, schema in json_schemas().items():
        committed = json.loads((root / f"{name}.schema.json").read_text())
        assert committed == schema, f"docs/schemas/{name}.schema.json is stale: run `reelstream schemas`"
