"""Settings section for the comment models (read only through streams.settings.Settings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

CATEGORIES = ("toxic", "offensive", "hate", "sexism", "spam")


def reaches(score, threshold):
    """score >= threshold, except that a threshold of 1.0 is never reached: it is how a threshold says
    "never" (the out-of-distribution choice gives 1.0 when no lower one is precise enough), and sigmoid
    scores do reach exactly 1.0 in float32. Works on floats and on numpy arrays alike."""
    return (score >= threshold) & (threshold < 1.0)


class Thresholds(BaseModel):
    """Per-category score thresholds: a score reaching review flags for review, reaching block blocks;
    1.0 means never (`reaches`)."""

    model_config = ConfigDict(frozen=True)
    review: float = Field(0.5, ge=0.0, le=1.0)
    block: float = Field(0.9, ge=0.0, le=1.0)


def _default_thresholds() -> dict[str, Thresholds]:
    return {c: Thresholds() for c in CATEGORIES}


class ModerationSettings(BaseModel):
    model_config = ConfigDict(frozen=True)
    # Directory holding trained weights; empty means the weights shipped inside the package.
    model_dir: str = ""
    batch_size: int = Field(64, ge=1)
    batch_max_wait_s: float = Field(0.05, gt=0)
    max_text_chars: int = Field(5000, ge=1)
    torch_threads: int = Field(1, ge=1)
    device: str = "auto"  # auto | cpu | cuda
    thresholds: dict[str, Thresholds] = Field(default_factory=_default_thresholds)

    @field_validator("thresholds")
    @classmethod
    def _fill_missing(cls, v: dict[str, Thresholds]) -> dict[str, Thresholds]:
        """An override of some categories keeps the defaults of the others; unknown names are errors."""
        unknown = set(v) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown moderation categories {sorted(unknown)}; known: {CATEGORIES}")
        return {c: v.get(c, Thresholds()) for c in CATEGORIES}
