"""The one librdkafka producer configuration (confluent-kafka), for the worker's outputs and every tool that
writes to the broker (replay, benches, chaos feeder), and the one way to hand it a message.

Keys are partitioned with murmur2, as Java clients and aiokafka (Faust) do, so that everything keyed by user
or video co-partitions with Faust's topics and tables whichever client wrote it. Idempotence keeps a
producer retry from duplicating a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.security import KafkaSecurity

DEFAULTS: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "linger.ms": 5,
}


def make_producer(bootstrap_servers: str, security: KafkaSecurity | None = None, **overrides: Any) -> Any:
    """A confluent_kafka.Producer on `bootstrap_servers` with DEFAULTS; `overrides` are librdkafka settings
    (dots in names: pass a dict with **) that win over them. `security`: TLS/SASL (default: the
    environment's, streams/security.py `client_config`)."""
    from confluent_kafka import Producer

    from streams.security import client_config

    return Producer(client_config(bootstrap_servers, security, **{**DEFAULTS, **overrides}))


def produce(producer: Any, topic: str, value: bytes | None, key: bytes | None = None, **kwargs: Any) -> None:
    """producer.produce, waiting while librdkafka's local queue is full (BufferError) instead of failing;
    then serves delivery callbacks that are due."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            break
        except BufferError:  # local queue full: let librdkafka drain it
            producer.poll(0.05)
    producer.poll(0)
