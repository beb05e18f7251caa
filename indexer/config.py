"""Settings section for the vector index (read only through reelstream.settings.Settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class IndexSettings(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["exact", "ivf"] = "exact"
    nlist: int = Field(1024, ge=1)
    nprobe: int = Field(32, ge=1)
    search_threads: int = Field(1, ge=1)
