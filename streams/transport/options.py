"""The transport's settings, passed in: `streams.app.create_app` builds one `TransportOptions` and attaches
it to its Faust app with `configure`; each patch reads it through the object it patches (the consumer
thread's and the producer's `app`), so two apps in one process never share settings."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ATTRIBUTE = "reelstream_transport_options"  # on the faust.App
# The longest wait between two tries while the broker does not answer (outage_start.py, group_join.py).
RETRY_MAX_S = 5.0


@dataclass(frozen=True)
class TransportOptions:
    # Consumer long-poll wait (fetch_wait.py); Faust hard-codes 1500.
    fetch_max_wait_ms: int = 20
    # Producers (streams/output.py) flushed together with Faust's before every offset commit (commit_flush.py).
    flush_with_commit: tuple[Any, ...] = ()
    # Topics whose offset holes are dead-lettered (offset_gaps.py); empty: no consumer watches for gaps.
    gap_topics: frozenset[str] = frozenset()
    # Where a hole's record goes: OutputProducer.emit (thread-safe, librdkafka) to the `dlq` topic.
    gap_emit: Callable[..., None] | None = None
    dlq: str = ""


DEFAULT = TransportOptions()


def configure(app: Any, options: TransportOptions) -> None:
    """Attach `options` to `app` (before its worker starts); the first time in a process, warn if the
    patched libraries' versions are not the ones the patches were written against (pins.py)."""
    setattr(app, ATTRIBUTE, options)
    _check_pins_once()


@functools.cache
def _check_pins_once() -> None:
    from streams.transport.pins import check_pins

    check_pins()


def options_of(app: Any) -> TransportOptions:
    """The options `configure` attached to `app`, or the defaults (an app nobody configured)."""
    return getattr(app, ATTRIBUTE, DEFAULT)
