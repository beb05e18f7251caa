"""A video's catalog status, as the catalog table stores it: what each `videos` event type makes it, and
which statuses keep a video out of recommendations. One definition for the pipeline, the catalog table and
the item side."""

from __future__ import annotations

from collections.abc import Mapping

ACTIVE, REMOVED, BLOCKED = "active", "removed", "blocked"
STATUS_OF = {"upload": ACTIVE, "remove": REMOVED, "block": BLOCKED}  # by contracts.events.VideoEvent.type
FINAL = frozenset({REMOVED, BLOCKED})  # a re-upload does not lift a removal or a block


def check_catalog_record(key: object, value: object) -> None:
    """A catalog changelog record (video id -> status, None for a tombstone), or a ValueError: the changelog
    is input too, and a made-up status would hide a video from everyone or bring a removed one back."""
    if type(key) is not str or not 0 < len(key) <= 128:
        raise ValueError("the key is not a video id")
    if value is not None and value not in (ACTIVE, REMOVED, BLOCKED):
        raise ValueError(f"status {str(value)[:40]!r} is none of {ACTIVE}, {REMOVED}, {BLOCKED}")


def is_available(status: str | None) -> bool:
    """Recommendable: active, or not in the catalog (yet): interactions may arrive before the upload."""
    return status is None or status == ACTIVE


def inactive_videos(catalog: Mapping[str, str]) -> set[str]:
    """Videos whose catalog status is not active (removed, blocked): never recommended."""
    return {v for v, status in catalog.items() if status != ACTIVE}
