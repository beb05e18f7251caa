"""A video's catalog status, as the catalog table stores it: what each `videos` event type makes it, and
which statuses keep a video out of recommendations. One definition for the pipeline, the catalog table and
the item side."""

from __future__ import annotations

from collections.abc import Mapping

ACTIVE, REMOVED, BLOCKED = "active", "removed", "blocked"
STATUS_OF = {"upload": ACTIVE, "remove": REMOVED, "block": BLOCKED}  # by contracts.events.VideoEvent.type
FINAL = frozenset({REMOVED, BLOCKED})  # a re-upload does not lift a removal or a block


def is_available(status: str | None) -> bool:
    """Recommendable: active, or not in the catalog (yet): interactions may arrive before the upload."""
    return status is None or status == ACTIVE


def inactive_videos(catalog: Mapping[str, str]) -> set[str]:
    """Videos whose catalog status is not active (removed, blocked): never recommended."""
    return {v for v, status in catalog.items() if status != ACTIVE}
