"""A background reader of a compacted topic's latest values: what the read API (`recommendations`) and the
review page (`review-queue`) serve from.

Why not a consumer group: such a process needs every partition's latest value, not a share of them, so it
assigns all partitions from the beginning without joining a group (no commits) and any number of replicas
can run beside the workers. `ready` is set once it has read to the end offsets it found at start.
"""

from __future__ import annotations

import logging
import threading
import time

from streams.settings import Settings

log = logging.getLogger(__name__)


class CompactedView:
    """Subclasses apply each record (`_apply`: key, value or None for a tombstone) to their own state."""

    def __init__(self, settings: Settings, topic: str, reader: str, bootstrap: str | None = None) -> None:
        self.s = settings
        self.topic = topic
        self.reader = reader  # names the client's group id (required, never joined) and the thread
        self.bootstrap = bootstrap or settings.bootstrap_servers
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"{reader}-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

        from streams.security import client_config

        topic = self.topic
        consumer = Consumer(client_config(self.bootstrap, **{
            "group.id": f"{self.s.app_id}-{self.reader}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }))  # fmt: skip
        try:
            while not self._stop.is_set():
                try:
                    meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
                except KafkaException as exc:  # the brokers are not reachable yet: keep asking
                    log.warning("%s: no metadata yet (%s)", topic, exc)
                    meta = None
                if meta is not None and meta.error is None and meta.partitions:
                    break
                time.sleep(1)  # the topic is created by the workers' deployment: wait for it
            else:
                return
            parts = sorted(meta.partitions)
            behind = {p for p in parts if consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] > 0}
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            if not behind:
                self.ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=1000, timeout=0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            behind.discard(msg.partition())
                            if not behind:
                                self.ready.set()
                        else:
                            log.warning("%s: %s", topic, err)
                        continue
                    if msg.key() is not None:
                        self._apply(msg.key(), msg.value())
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log; the process stays up
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the %s reader stopped", topic)
        finally:
            consumer.close()
