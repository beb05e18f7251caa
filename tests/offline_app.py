"""A worker's finalized Faust app that is never started (no broker is reached), and raw-bytes channels on it:
what the transport and micro-batching tests drive by hand."""

from __future__ import annotations

from typing import Any

from models.recs.serving import load_recommender
from models.text.base import load_comment_models
from streams.app import create_app
from streams.settings import Settings
from tests.sinks import Sink

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def offline_app() -> Any:
    """Made inside the running loop, so its events and tasks live there."""
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation), output=Sink())
    app.finalize()
    return app


def raw_channel(app: Any, topic: str) -> Any:
    """A subscribed channel of raw bytes, as an agent's input topic is."""
    return aiter(app.topic(topic, **RAW))
