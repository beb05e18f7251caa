"""The transport's settings, passed in: `streams.app.create_app` builds one `TransportOptions` and attaches
it to its Faust app with `configure`; each patch reads it through the object it patches (the consumer
thread's and the producer's `app`), so two apps in one process never share settings."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ATTRIBUTE = "reelstream_transport_options"  # on the faust.App
# The longest wait between two tries while the broker does not answer (outage_start.py, group_join.py).
RETRY_MAX_S = 5.0


class ReportedGaps:
    """Per app: the offset ranges reported lost per (topic, partition), so that one loss is reported once,
    whoever sees it and in whatever order: the consumer's reset watcher (a thread of its own), the check
    where a table's recovery starts, a re-read of the same hole after a rebalance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._covered: dict[tuple[str, int], list[tuple[int, int]]] = {}

    def claim(self, topic: str, partition: int, first: int, end: int) -> list[tuple[int, int]]:
        """The parts of offsets first..end-1 not reported yet, as [start, end) ranges (reported from now on)."""
        with self._lock:
            covered = self._covered.setdefault((topic, partition), [])
            parts, at = [], first
            for start, stop in covered:  # sorted, disjoint
                if stop <= at or start >= end:
                    continue
                if start > at:
                    parts.append((at, start))
                at = max(at, stop)
            if at < end:
                parts.append((at, end))
            merged: list[tuple[int, int]] = []
            for start, stop in sorted([*covered, (first, end)]):
                if merged and start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
                else:
                    merged.append((start, stop))
            covered[:] = merged
            return parts


@dataclass(frozen=True)
class TransportOptions:
    # Consumer long-poll wait (fetch_wait.py); Faust hard-codes 1500.
    fetch_max_wait_ms: int = 20
    # Producers (streams/output.py) flushed together with Faust's before every offset commit (commit_flush.py).
    flush_with_commit: tuple[Any, ...] = ()
    # Topics whose offset holes are dead-lettered (offset_gaps.py); empty: no consumer watches for gaps.
    gap_topics: frozenset[str] = frozenset()
    # Tables' changelogs, watched the same way while read (a standby, a recovery): a hole is dead-lettered as
    # a changelog gap; Faust commits no offset there, so nothing is acked.
    changelog_topics: frozenset[str] = frozenset()
    # Where a hole's record goes: OutputProducer.emit (thread-safe, librdkafka) to the `dlq` topic.
    gap_emit: Callable[..., None] | None = None
    dlq: str = ""
    gaps: ReportedGaps = field(default_factory=ReportedGaps, compare=False)


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
