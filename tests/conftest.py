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


@pytest.fixture
def settings():
    from streams.settings import Settings

    return Settings()
