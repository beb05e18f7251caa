"""Contracts of the moderation workflow (issue #20): the review queue, reviewers' decisions, appeal outcomes
and DSA statements of reasons. Published as JSON Schemas beside the other topics (docs/schemas/).

`review-decisions` is written by people (through `reelstream review`) and read by the workers, so it is
input like `events`: `parse_decision` either returns a typed decision or raises InvalidMessage.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, with_config
from typing_extensions import TypedDict

from contracts.events import ID, SCHEMA_VERSION, Id, InvalidMessage, Timestamp, _load_object, _raise_from, check_json

CATEGORIES = ("toxic", "offensive", "hate", "sexism", "spam")  # as models/text/config.py (contracts import no model)
Category = Literal["toxic", "offensive", "hate", "sexism", "spam", "none"]
Decision = Literal["approve", "remove", "escalate"]
# Why an item is in the queue: the model said review; a quality-control sample of what it allowed or blocked;
# a user's appeal of a block; a reviewer escalated it (a senior reviewer's queue, same page).
ItemKind = Literal["review", "sample", "appeal", "escalated"]


class ReviewItem(BaseModel):
    """`review-queue`, keyed by `item_id` (compacted; a tombstone once decided or erased). What a reviewer
    needs to decide without another lookup; it holds the comment's text, so it is personal data: a
    `user_delete` tombstones the user's pending items and the topic's retention is bounded (README)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    item_id: str  # the comment's event_id; an appeal's own event_id
    kind: ItemKind
    event_id: str  # the comment
    user_id: str
    video_id: str
    text: str
    lang: str
    scores: dict[str, float]
    sentiment: dict[str, float]
    reasons: list[str]
    model_action: Literal["allow", "review", "block"]
    model_version: str
    queued_at: float
    appeal_text: str | None = None  # kind appeal: the user's own words


# What the `reviews` table keeps of a blocked comment for its appeal window (streams/review.py): these fields
# of its queue item, when it was blocked, and whether it was appealed.
BLOCKED_FIELDS = ("video_id", "text", "lang", "scores", "sentiment", "reasons", "model_action", "model_version")
BlockedComment = create_model(
    "BlockedComment",
    __config__=ConfigDict(strict=True, allow_inf_nan=False),
    **{name: (ReviewItem.model_fields[name].annotation, ...) for name in BLOCKED_FIELDS},  # type: ignore[call-overload]
    blocked_at=(float, ...),
    appealed=(bool, False),
)


@with_config(ConfigDict(extra="forbid"))
class _ReviewRecord(TypedDict, total=False):
    pending: dict[str, ReviewItem]
    blocked: dict[str, BlockedComment]


_REVIEW_RECORD = TypeAdapter(_ReviewRecord)


def check_review_record(key: bytes | None, value: bytes | None) -> None:
    """A `reviews` changelog record as the worker writes it (key: the user id as JSON; value: `{"pending":
    {item_id: ReviewItem}, "blocked": {event_id: BlockedComment}}`, None for a tombstone), checked on its
    bytes, or a ValueError: the changelog is input too (a record naming another user, or one the workflow
    would choke on, is refused)."""
    user_id = check_json(ID, key)
    record = check_json(_REVIEW_RECORD, value) if value is not None else {}
    for item_id, item in record.get("pending", {}).items():
        if item.item_id != item_id or item.user_id != user_id:
            raise ValueError(f"pending item {item_id[:40]!r} is not the key user's item of that id")
        if not all(math.isfinite(x) for x in (item.queued_at, *item.scores.values(), *item.sentiment.values())):
            raise ValueError(f"pending item {item_id[:40]!r} has a number that is not finite")


class ReviewDecision(BaseModel):
    """`review-decisions`, keyed by `user_id` (so it reaches the worker that holds the user's queue)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    decision_id: Id
    item_id: Id
    user_id: Id
    decision: Decision
    category: Category = "none"  # the reviewer's category: what a removal is for, a label for training
    note: Annotated[str, Field(max_length=2000)] = ""
    reviewer: Id
    decided_at: Timestamp


class AppealOutcome(BaseModel):
    """`appeal-outcomes`, keyed by `user_id`: what the user is told about their appeal."""

    schema_version: Literal[1] = SCHEMA_VERSION
    appeal_id: str
    event_id: str  # the comment appealed
    user_id: str
    outcome: Literal["upheld", "reversed", "not_appealable"]
    decided_at: float
    detail: str = ""


# DSA Art. 17 statements under the Commission's Transparency Database (TDB) API field names and enum keys,
# checked 2026-12-05 against its API documentation (transparency.dsa.ec.europa.eu/page/api-documentation) and
# the request validation it documents (digital-services-act/transparency-database, StatementStoreRequest.php).
# The TDB's categories: ILLEGAL_OR_HARMFUL_SPEECH for abuse; spam is no TDB category of its own, it is "other
# violation of the provider's terms and conditions" (the former SCOPE_OF_PLATFORM_SERVICE no longer exists).
DSA_CATEGORY = {
    "toxic": "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "offensive": "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "hate": "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "sexism": "STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH",
    "spam": "STATEMENT_CATEGORY_OTHER_VIOLATION_TC",
    "none": "STATEMENT_CATEGORY_OTHER_VIOLATION_TC",
}
# TDB puid: at most 500 characters of a-z, A-Z, 0-9, "-" and "_", unique per statement within the platform.
PUID_PATTERN = r"^[A-Za-z0-9_-]{1,500}$"


def tdb_puid(event_id: str) -> str:
    """The comment's event id when the TDB accepts it as a puid, else a stable digest of it (so a
    redelivered block still gets the same puid; the platform keeps both in `sor_id`)."""
    if re.fullmatch(PUID_PATTERN, event_id):
        return event_id
    return "h-" + hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()


class StatementOfReasons(BaseModel):
    """`statements-of-reasons`, keyed by `puid`: one per block, automated or human (DSA Art. 17(3)). Holds no
    user id and no text (the Transparency Database takes no personal data); `puid` is the comment's event
    id (see tdb_puid), which the platform maps back to the user it must inform. Every field but
    `schema_version`, `sor_id`, `model_version` and `video_id` (ours, to be dropped before submission) is a
    TDB API field with a value its validation accepts; a comment gets at most one statement, so the puid is
    unique per statement as the TDB requires."""

    schema_version: Literal[1] = SCHEMA_VERSION
    sor_id: str  # ours: "<event id>:model" or "<event id>:<decision_id>"
    puid: Annotated[str, Field(pattern=PUID_PATTERN)]
    decision_visibility: list[Literal["DECISION_VISIBILITY_CONTENT_REMOVED"]] = ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    decision_ground: Literal["DECISION_GROUND_INCOMPATIBLE_CONTENT"] = "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    incompatible_content_ground: Annotated[str, Field(max_length=500)]  # the terms-of-service clause
    incompatible_content_explanation: Annotated[str, Field(max_length=2000)]
    category: Literal["STATEMENT_CATEGORY_ILLEGAL_OR_HARMFUL_SPEECH", "STATEMENT_CATEGORY_OTHER_VIOLATION_TC"]
    content_type: list[Literal["CONTENT_TYPE_TEXT"]] = ["CONTENT_TYPE_TEXT"]
    content_language: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]  # uppercase ISO 639-1, as the TDB takes it
    automated_detection: Literal["Yes", "No"]  # the TDB's strings, not a boolean; "Yes": the model flagged it
    automated_decision: Literal["AUTOMATED_DECISION_FULLY", "AUTOMATED_DECISION_NOT_AUTOMATED"]
    source_type: Literal["SOURCE_VOLUNTARY"] = "SOURCE_VOLUNTARY"
    application_date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]  # YYYY-MM-DD (UTC)
    content_date: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]  # YYYY-MM-DD (UTC) of the comment
    decision_facts: Annotated[str, Field(max_length=5000)]  # the scores over their thresholds, the reviewer's note
    model_version: str
    video_id: str


def parse_decision(raw: bytes | None, *, max_bytes: int) -> ReviewDecision:
    """A `review-decisions` record, or InvalidMessage (dead-lettered as `invalid_decision`, the detail naming
    what `events` would have been dead-lettered for): the same checks as every input topic's records."""
    try:
        obj = _load_object(raw, max_bytes)
        try:
            return ReviewDecision.model_validate(obj)
        except ValidationError as exc:
            _raise_from(exc)
            raise  # unreachable
    except InvalidMessage as exc:
        raise InvalidMessage("invalid_decision", f"{exc.reason}: {exc.detail}") from None


def review_schemas() -> dict[str, dict]:
    return {
        "review-queue": ReviewItem.model_json_schema(),
        "review-decisions": ReviewDecision.model_json_schema(),
        "appeal-outcomes": AppealOutcome.model_json_schema(),
        "statements-of-reasons": StatementOfReasons.model_json_schema(),
    }
