"""Shared fixtures. Integration tests start real processes (embedded broker, workers) on loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Workers are launched with `python -m reelstream.cli`; keep them on this interpreter and checkout.
os.environ.setdefault("PYTHONPATH", str(ROOT))
# Apps built in this process keep their local stores (REELSTREAM_DATA_DIR) out of the checkout; processes
# started by lab.local get their own directory each.
if "REELSTREAM_DATA_DIR" not in os.environ:
    import tempfile

    os.environ["REELSTREAM_DATA_DIR"] = tempfile.mkdtemp(prefix="reelstream-test-data-")


@pytest.fixture
def settings():
    from streams.settings import Settings

    return Settings()
