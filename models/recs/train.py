"""Batch training from recorded `events` values (a recorded topic): the full refit that is published as a
new model version without stopping the workers."""

from __future__ import annotations

from collections.abc import Iterable

from contracts.events import InvalidMessage, UserDelete, parse_event
from contracts.history import HistoryRow
from models.recs.als import StreamingALS
from models.recs.confidence import append, event_weight, user_confidences
from models.recs.config import RecsSettings
from models.recs.popularity import PopularityRecommender


def histories_from_values(
    values: Iterable[bytes | None], settings: RecsSettings, *, max_bytes: int, max_text_chars: int
) -> tuple[dict[str, list[HistoryRow]], int]:
    """Stored-history equivalent of an event stream: per user their interactions (deduplicated, capped at
    history_max_events like the agent's table); user_delete erases what came before. Returns the
    histories and how many messages were invalid (skipped, as the DLQ would take them)."""
    histories: dict[str, list[HistoryRow]] = {}
    invalid = 0
    for raw in values:
        try:
            event = parse_event(raw, max_bytes=max_bytes, max_text_chars=max_text_chars)
        except InvalidMessage:
            invalid += 1
            continue
        if isinstance(event, UserDelete):
            histories.pop(event.user_id, None)
            continue
        h = histories.get(event.user_id, [])
        histories[event.user_id] = append(h, [HistoryRow.from_event(event)], settings.history_max_events)
    return histories, invalid


def train_als(
    values: Iterable[bytes | None], settings: RecsSettings, *, max_bytes: int = 1_000_000, max_text_chars: int = 5000
) -> tuple[StreamingALS, dict[str, int]]:
    """Fit a batch model (implicit) on recorded `events` values; also returns counts."""
    histories, invalid = histories_from_values(values, settings, max_bytes=max_bytes, max_text_chars=max_text_chars)
    popularity = PopularityRecommender(settings.popularity_half_life_s)
    for i in sorted((i for h in histories.values() for i in h), key=lambda i: i.ts):
        popularity.observe(i.video_id, max(0.0, event_weight(i, settings.weights)), i.ts)
    conf = {u: user_confidences(h, settings) for u, h in histories.items()}
    conf = {u: c for u, c in conf.items() if c}
    model = StreamingALS.fit(conf, settings, popularity)
    interactions = sum(map(len, histories.values()))
    counts = {"users": len(conf), "videos": model.n_items, "interactions": interactions, "invalid": invalid}
    return model, counts
