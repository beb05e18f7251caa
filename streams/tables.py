"""A Faust Table whose changelog writes go through the OutputProducer (librdkafka) instead of Faust's
producer: the same bytes (JSON key and value, None as a tombstone) to the same partition, flushed before
offsets are committed like every other output. Recovery is Faust's own, from the changelog topic.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
import orjson

from streams.output import OutputProducer


class OutputTable(faust.Table):
    output: OutputProducer | None = None

    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        if self.output is None:
            return super().send_changelog(partition, key, value, key_serializer, value_serializer)
        payload = None if value is None else orjson.dumps(value)
        self.output.emit(self.changelog_topic.get_topic_name(), orjson.dumps(key), payload, None, partition)
        # on_key_set/on_key_del only read the partition of the returned future message.
        return SimpleNamespace(message=SimpleNamespace(partition=partition))
