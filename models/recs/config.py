"""Settings section for recommendations (read only through reelstream.settings.Settings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConfidenceWeights(BaseModel):
    """How much each kind of feedback adds to a (user, video) confidence. Configuration, not code."""

    model_config = ConfigDict(frozen=True)
    watch: float = 1.0  # multiplied by the watch ratio (watch_ms / duration_ms, capped at 1)
    like: float = 4.0
    share: float = 6.0
    skip: float = -0.5
    comment_positive: float = 2.0
    comment_negative: float = -1.0
    comment_neutral: float = 0.5


class RecsSettings(BaseModel):
    model_config = ConfigDict(frozen=True)
    top_k: int = Field(10, ge=1, le=500)
    factors: int = Field(64, ge=2)
    regularization: float = 0.05
    alpha: float = 1.0
    iterations: int = 15
    history_max_events: int = Field(500, ge=1)  # per user; also the event_id dedup window
    popularity_half_life_s: float = Field(3600.0, gt=0)
    item_refresh_interval_s: float = Field(2.0, gt=0)
    model_dir: str = ""  # a saved batch model to bootstrap from; empty = start cold
    weights: ConfidenceWeights = ConfidenceWeights()
