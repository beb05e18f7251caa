"""The internal topics of two-speed ALS: `item-vectors` values and the version records on `models`.

Written by the trainer (batch fits) and by the workers' item side (videos solved between fits), read by every
worker's replicas; parsed here so that what one writes the other reads, and anything else is rejected.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

MODEL_KEY = "als"  # the key of the version record on `models`
SCHEMA_VERSION = 1


def vector_record(vector: Any, model_version: str, batch: bool) -> dict[str, Any]:
    """An `item-vectors` value: the vector, the model version it belongs to, and who solved it (the batch fit,
    or a worker's item side between fits)."""
    return {
        "vector": [round(float(x), 6) for x in vector],
        "model_version": model_version,
        "source": "batch" if batch else "stream",
    }


def parse_vector_record(value: Any) -> tuple[list[float], bool] | None:
    """(vector, solved by a batch fit) of a decoded `item-vectors` value; a bare list (written before versions
    were recorded) is a stream vector. None for anything else."""
    if isinstance(value, list):
        return value, False
    if isinstance(value, dict) and isinstance(value.get("vector"), list):
        return value["vector"], value.get("source") == "batch"
    return None


class ModelRecord(NamedTuple):
    """A published batch model version, as workers need it."""

    model_version: str
    gram: list[float]  # its users' X^T X, row-major, factors x factors


def parse_model_record(value: Any, factors: int) -> ModelRecord:
    """A decoded `models` value; ValueError (with the reason) for anything a worker must not apply."""
    if not isinstance(value, dict) or value.get("schema_version") != SCHEMA_VERSION:
        raise ValueError("not a version record of a known schema")
    version, gram = value.get("model_version"), value.get("gram")
    if not isinstance(version, str) or not version:
        raise ValueError("model_version missing")
    if value.get("factors") != factors or not isinstance(gram, list) or len(gram) != factors * factors:
        raise ValueError(f"gram is not {factors}x{factors} (the configured factors)")
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in gram):
        raise ValueError("gram has a non-finite entry")
    return ModelRecord(version, gram)
