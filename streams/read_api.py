"""`GET /users/{id}/recommendations`: a user's current list, for product services (`reelstream recs-api`).

Why a process of its own, fed by the compacted `recommendations` topic rather than by the workers: a worker
holds a user's list only while serving it, and only for the partitions it owns; the topic holds every user's
latest list (keyed by user, compacted; a tombstone after an erasure). This process reads every partition from
the beginning without joining a group (assign, no commits), keeps the latest value per user, and answers from
memory: any number of replicas, none of them in the workers' consumer group, none slowing the pipeline.

Off unless configured: it will not start without a token (`REELSTREAM_READ_API__TOKEN`), every request must
carry it (`Authorization: Bearer <token>`, compared in constant time), and it binds 127.0.0.1 unless
`REELSTREAM_READ_API__HOST` says otherwise. It serves only that route and `/ready` (200 once it has read to
the end offsets it found at start). The body is the record as the workers emitted it (contracts.events
Recommendation, docs/schemas/recommendations.schema.json), as `application/json`. Memory: every user's latest
list (~1 KB each with explanations); 404 for a user with no list or erased.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from streams.compacted_view import CompactedView
from streams.settings import Settings

log = logging.getLogger(__name__)


class LatestLists(CompactedView):
    """The latest `recommendations` value per user, read by a background thread."""

    def __init__(self, settings: Settings, bootstrap: str | None = None) -> None:
        super().__init__(settings, settings.topics.recommendations, "recs-api", bootstrap)
        self._lists: dict[bytes, bytes] = {}

    def get(self, user_id: str) -> bytes | None:
        with self._lock:
            return self._lists.get(user_id.encode())

    def __len__(self) -> int:
        return len(self._lists)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        with self._lock:
            if value is None:
                self._lists.pop(key, None)  # erased
            else:
                self._lists[key] = value


def make_web_app(lists: LatestLists, token: str) -> Any:
    """The aiohttp application: the one route, and /ready."""
    from aiohttp import web

    expected = f"Bearer {token}".encode()

    async def recommendations(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        value = lists.get(request.match_info["user_id"])
        if value is None:
            return web.json_response({"error": "no recommendations for this user"}, status=404)
        return web.Response(body=value, content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        if lists.error is not None:
            return web.json_response({"ready": False, "error": lists.error}, status=503)
        ok = lists.ready.is_set()
        return web.json_response({"ready": ok, "users": len(lists)}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/users/{user_id}/recommendations", recommendations)
    app.router.add_get("/ready", ready)
    return app
