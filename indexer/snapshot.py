"""Snapshot framing: a JSON header plus named numpy arrays in one uncompressed .npz, loaded without pickle."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson


def pack(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8), **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return orjson.loads(arrays.pop("meta").tobytes()), arrays


def encode_ids(ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Any strings, exactly: UTF-8 bytes concatenated plus their lengths."""
    encoded = [i.encode() for i in ids]
    return {
        "id_lengths": np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)),
        "id_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
    }


def decode_ids(arrays: dict[str, np.ndarray]) -> list[str]:
    blob = arrays["id_bytes"].tobytes()
    ends = np.cumsum(arrays["id_lengths"]).tolist()
    starts = [0, *ends[:-1]]
    return [blob[s:e].decode() for s, e in zip(starts, ends)]
