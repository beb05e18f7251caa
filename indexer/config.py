"""Settings section for the vector index (read only through streams.settings.Settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class IndexSettings(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["exact", "ivf"] = "exact"
    # Tuned with `reelstream bench index --items 1000000` (64 dims, ALS-like synthetic items): see indexer/ivf.py.
    nlist: int = Field(4096, ge=1)
    nprobe: int = Field(128, ge=1)
    search_threads: int = Field(1, ge=1)
    # IVF trains once it holds nlist x train_per_list vectors (exact until then) and samples that many.
    train_per_list: int = Field(39, ge=1)
    # IVF lifts MIPS to L2 with radius norm_headroom x the largest item norm; a longer vector grows it (O(N)).
    norm_headroom: float = Field(1.1, ge=1.0)
