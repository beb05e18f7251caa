"""Event contracts (../shared/DESIGN.md). Every message is JSON with a `schema_version`.

Validation happens once, at the edge: `parse_event` either returns a typed event or raises
`InvalidMessage` with a short machine-readable reason that the DLQ record and metric carry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1

Id = Annotated[str, Field(min_length=1, max_length=128)]
# Event time, epoch seconds. Bounded so absurd values are rejected, not stored.
Timestamp = Annotated[float, Field(ge=0, le=4_102_444_800)]  # 2100-01-01


# strict: JSON types as sent (no "12" for 12, no true for 1.0); an int is still a valid float.
_STRICT = ConfigDict(frozen=True, extra="ignore", strict=True)


class _Base(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    user_id: Id
    ts: Timestamp


class _VideoEvent(_Base):
    video_id: Id


class Watch(_VideoEvent):
    type: Literal["watch"]
    watch_ms: Annotated[int, Field(ge=0, le=86_400_000)]
    duration_ms: Annotated[int, Field(gt=0, le=86_400_000)]

    @property
    def ratio(self) -> float:
        return min(1.0, self.watch_ms / self.duration_ms)


class Like(_VideoEvent):
    type: Literal["like"]


class Unlike(_VideoEvent):
    type: Literal["unlike"]


class Share(_VideoEvent):
    type: Literal["share"]


class Skip(_VideoEvent):
    type: Literal["skip"]


class Comment(_VideoEvent):
    type: Literal["comment"]
    text: Annotated[str, Field(min_length=1)]
    lang: Literal["en", "zh"] | None = None


class UserDelete(_Base):
    """The right to erasure: history, factors and pending outputs of the user are removed."""

    type: Literal["user_delete"]
    video_id: Id | None = None


class Appeal(_VideoEvent):
    """A user contests the block of one of their comments (`target_event_id`): it re-enters the review
    queue marked as an appeal, and its outcome goes to `appeal-outcomes` (streams/review.py). Not an
    interaction: it never reaches the user's history."""

    type: Literal["appeal"]
    target_event_id: Id
    text: Annotated[str, Field(max_length=2000)] | None = None  # the user's reasons, shown to the reviewer


UserEvent = Annotated[
    Union[Watch, Like, Unlike, Share, Skip, Comment, UserDelete, Appeal], Field(discriminator="type")
]
EVENT_TYPES = ("watch", "like", "unlike", "share", "skip", "comment", "user_delete", "appeal")
INTERACTION_TYPES = ("watch", "like", "unlike", "share", "skip", "comment")


class VideoEvent(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1] = SCHEMA_VERSION
    video_id: Id
    type: Literal["upload", "remove", "block"]
    ts: Timestamp
    title: Annotated[str, Field(max_length=500)] | None = None
    tags: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=50)] | None = None


class RecItem(BaseModel):
    video_id: str
    score: float
    # Why (additive; absent in records written before): the source of the list ("explore": an exploration
    # slot for a video with few interactions yet, models/recs/exploration.py), and for ALS the videos of the
    # user's history that added most to this item's score, largest first (models/recs/solve.py).
    reason: Literal["als", "popular", "explore"] | None = None
    because: list[str] = []


class Recommendation(BaseModel):
    user_id: str
    items: list[RecItem]
    model_version: str
    source_event_id: str
    generated_at: float
    arm: str | None = None  # the user's A/B arm when an experiment runs (additive; absent otherwise)


class ModerationFlag(BaseModel):
    event_id: str
    user_id: str
    video_id: str
    lang: str
    scores: dict[str, float]
    sentiment: dict[str, float]
    action: Literal["allow", "review", "block"]
    reasons: list[str]
    model_version: str
    # Categories whose head has no training data in `lang`: scored, but they never decide the action.
    abstained: list[str] = []
    # Who decided `action` (additive; absent before 2026-12-05 means "model"): a reviewer's decision is a
    # second flag for the same event_id that overrides the model's (streams/review.py).
    decided_by: Literal["model", "reviewer"] = "model"
    reviewer: str | None = None
    decided_at: float | None = None


class DeadLetter(BaseModel):
    reason: str
    detail: str = ""
    topic: str
    partition: int
    offset: int
    raw: str  # original bytes, base64


_user_event = TypeAdapter(UserEvent)
_video_event = TypeAdapter(VideoEvent)
ID = TypeAdapter(Id)  # a bare id (a record's JSON key), for `check_json`

# Reasons are a closed set: they become a metric label.
REASONS = (
    "too_large",
    "bad_encoding",
    "bad_json",
    "not_an_object",
    "unknown_schema_version",
    "unknown_type",
    "missing_field",
    "bad_field",
    "text_too_long",
    "processing_error",  # valid input the worker failed on (a bug): kept for replay after the fix
    "offset_gap",  # records the broker deleted before the worker read them (streams/transport/offset_gaps.py)
    # internal topics (contracts/models.py): never applied
    "invalid_item_vector",  # item-vectors
    "invalid_gram",  # user-gram
    "invalid_model_record",  # models
    "invalid_item_message",  # interactions-by-video
    "invalid_item_state",  # the item-state changelog
    "invalid_user_record",  # the users changelog
    "invalid_review_record",  # the reviews changelog
    "invalid_catalog_record",  # the catalog changelog
    "invalid_decision",  # review-decisions: not a decision of the contract (contracts/review.py)
    "stale_decision",  # review-decisions: no such item pending for that user (decided, erased, unknown)
)


class InvalidMessage(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail[:500]


def _load_object(raw: bytes | None, max_bytes: int) -> dict:
    if raw is None:
        raise InvalidMessage("bad_json", "empty value (tombstone) on an input topic")
    if len(raw) > max_bytes:
        raise InvalidMessage("too_large", f"{len(raw)} bytes > {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("bad_encoding", str(exc)) from None
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("bad_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise InvalidMessage("not_an_object", type(obj).__name__)
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:  # `true == 1` in Python
        raise InvalidMessage("unknown_schema_version", repr(obj.get("schema_version"))[:50])
    return obj


def check_json(adapter: TypeAdapter, raw: bytes | None) -> Any:
    """`raw` (None read as JSON null) parsed and checked in one pass by pydantic's strict JSON validation,
    or a ValueError naming where and what the first problem is (its message names no input value)."""
    try:
        return adapter.validate_json(raw if raw is not None else b"null", strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise ValueError(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}") from None


def _raise_from(exc: ValidationError) -> None:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "union_tag_invalid":
        raise InvalidMessage("unknown_type", err["msg"]) from None
    if kind == "missing":
        raise InvalidMessage("missing_field", loc) from None
    raise InvalidMessage("bad_field", f"{loc}: {err['msg']}") from None


def parse_event(
    raw: bytes | None, *, max_bytes: int, max_text_chars: int
) -> Watch | Like | Unlike | Share | Skip | Comment | UserDelete | Appeal:
    obj = _load_object(raw, max_bytes)
    if "type" not in obj:
        raise InvalidMessage("missing_field", "type")
    try:
        event = _user_event.validate_python(obj)
    except ValidationError as exc:
        _raise_from(exc)
    if isinstance(event, Comment) and len(event.text) > max_text_chars:
        raise InvalidMessage("text_too_long", f"{len(event.text)} chars > {max_text_chars}")
    return event


def parse_video_event(raw: bytes | None, *, max_bytes: int) -> VideoEvent:
    obj = _load_object(raw, max_bytes)
    try:
        return _video_event.validate_python(obj)
    except ValidationError as exc:
        _raise_from(exc)
        raise  # unreachable


def json_schemas() -> dict[str, dict]:
    """Published JSON Schemas of every contract, generated from the models."""
    from contracts.review import review_schemas
    return {
        "events": _user_event.json_schema(),
        "videos": VideoEvent.model_json_schema(),
        "recommendations": Recommendation.model_json_schema(),
        "moderation-flags": ModerationFlag.model_json_schema(),
        "events.dlq": DeadLetter.model_json_schema(),
        **review_schemas(),
    }


def dumps(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model)

