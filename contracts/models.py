"""The internal topics of two-speed ALS: `item-vectors` values, Gram sums and the version records on `models`.

Written by the trainer (batch fits) and by the workers' item side (videos solved between fits), read by every
worker's replicas; parsed here so that what one writes the other reads, and anything else is rejected.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, NamedTuple

import numpy as np
from orjson import loads as json_loads

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


def check_vector(vector: Any, factors: int, max_norm: float) -> list[float]:
    """A factor or item vector as read from a topic: `factors` finite numbers (not booleans) with a norm of
    at most `max_norm` (one vector of 1e30s would rank its video first for everyone). ValueError otherwise."""
    if not isinstance(vector, list) or len(vector) != factors:
        raise ValueError(f"not a list of {factors} numbers")
    if not all(type(x) in (int, float) for x in vector):
        raise ValueError("an entry is not a number")
    if not all(math.isfinite(x) for x in vector):
        raise ValueError("an entry is not finite")
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm > max_norm:
        raise ValueError(f"norm {norm:.3g} above {max_norm:g}")
    return vector


def parse_item_vector(value: Any, factors: int, max_norm: float) -> tuple[list[float], bool]:
    """A decoded `item-vectors` value checked for serving: (vector, solved by a batch fit); ValueError."""
    parsed = parse_vector_record(value)
    if parsed is None:
        raise ValueError("not an item-vectors record")
    return check_vector(parsed[0], factors, max_norm), parsed[1]


def check_gram(flat: Any, factors: int) -> list[float]:
    """A Gram sum X^T X as published (row-major): factors^2 finite numbers, symmetric, with a non-negative
    diagonal (a sum of outer products has both). ValueError otherwise."""
    if not isinstance(flat, list) or len(flat) != factors * factors:
        raise ValueError(f"not {factors}x{factors} numbers")
    if not all(type(x) in (int, float) for x in flat):
        raise ValueError("an entry is not a number")
    if not all(math.isfinite(x) for x in flat):
        raise ValueError("an entry is not finite")
    scale = max(1.0, max(abs(x) for x in flat))
    for i in range(factors):
        if flat[i * factors + i] < 0:
            raise ValueError("a negative diagonal entry")
        for j in range(i + 1, factors):
            if abs(flat[i * factors + j] - flat[j * factors + i]) > 1e-6 * scale:
                raise ValueError("not symmetric")
    return flat


def pack_factor(vector: Any) -> str:
    """A factor as written to `interactions-by-video` and the item-state changelog: base64 of little-endian
    float32. Exact for the float32 factors the models hold, and a quarter of JSON numbers' bytes: an item of
    `interactions-by-video` at 64 factors is 375 bytes against 1,351 (measured), where an event is ~124."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def unpack_factor(packed: Any, factors: int, max_norm: float = math.inf) -> np.ndarray:
    """`pack_factor`'s inverse, checked as `check_vector` checks a list: `factors` finite float32 with a norm
    of at most `max_norm`. ValueError otherwise."""
    if not isinstance(packed, str):
        raise ValueError("a packed factor is not a string")  # noqa: TRY004 - ValueError: what every check here raises
    try:
        raw = base64.b64decode(packed, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"a packed factor is not base64: {exc}") from None
    if len(raw) != 4 * factors:
        raise ValueError(f"a packed factor is {len(raw)} bytes, not {factors} float32")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ValueError("an entry is not finite")
    norm = math.sqrt(float(np.dot(vector.astype(np.float64), vector)))
    if norm > max_norm:
        raise ValueError(f"norm {norm:.3g} above {max_norm:g}")
    return vector


ItemItem = tuple[str, str, list[float] | np.ndarray | None, float]  # video_id, user_id, user's factor, confidence


def parse_item_messages(raw: bytes | None, factors: int, max_norm: float) -> list[ItemItem]:
    """An `interactions-by-video` message: a list of [video_id, user_id, user factor or None, confidence]
    (None with 0: the user withdrawn, erasure). The factor is packed (`pack_factor`), or a list of numbers as
    workers before 2026-12-06 wrote it (still in the topic after an upgrade, and what `item_factors = "json"`
    writes during a rolling one). Checked whole before any item is applied; ValueError."""
    if raw is None:
        raise ValueError("empty message")
    items = json_loads(raw)
    if not isinstance(items, list):
        raise ValueError("not a list of items")  # noqa: TRY004 - ValueError: what every check here raises
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) != 4:
            raise ValueError("an item is not [video_id, user_id, factor, confidence]")
        video, user, factor, confidence = item
        if not isinstance(video, str) or not video or not isinstance(user, str) or not user:
            raise ValueError("an item's video_id or user_id is not a non-empty string")
        if type(confidence) not in (int, float) or not math.isfinite(confidence):
            raise ValueError("an item's confidence is not a finite number")
        if isinstance(factor, str):
            factor = unpack_factor(factor, factors, max_norm)
        elif factor is not None:
            check_vector(factor, factors, max_norm)
        out.append((video, user, factor, float(confidence)))
    return out


class ModelRecord(NamedTuple):
    """A published batch model version, as workers need it."""

    model_version: str
    gram: list[float]  # its users' X^T X, row-major, factors x factors
    # (item-vectors partition, the offset just past the fit's last vector there); records written before
    # this field have none: a worker serves the version once its replica has read that far.
    vectors_end: tuple[tuple[int, int], ...] = ()


def parse_model_record(value: Any, factors: int) -> ModelRecord:
    """A decoded `models` value; ValueError (with the reason) for anything a worker must not apply."""
    if not isinstance(value, dict) or value.get("schema_version") != SCHEMA_VERSION:
        raise ValueError("not a version record of a known schema")
    version, gram = value.get("model_version"), value.get("gram")
    if not isinstance(version, str) or not version:
        raise ValueError("model_version missing")
    if value.get("factors") != factors or not isinstance(gram, list) or len(gram) != factors * factors:
        raise ValueError(f"gram is not {factors}x{factors} (the configured factors)")
    ends = value.get("item_vectors_end", {})
    if not (isinstance(ends, dict) and all(k.isdigit() and type(o) is int and o >= 0 for k, o in ends.items())):
        raise ValueError("item_vectors_end is not {partition: offset}")
    return ModelRecord(version, check_gram(gram, factors), tuple(sorted((int(k), o) for k, o in ends.items())))
