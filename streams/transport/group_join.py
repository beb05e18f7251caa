"""A first group join that survives a broker outage: the leader waits for the subscribed topics' metadata
before assigning, and errors aiokafka parks for "the user" are consumed so the group is rejoined.

aiokafka's bootstrap asks for no topic metadata; the subscribed topics' metadata is requested when Faust
subscribes. If that request fails (broker down) and the broker is back by the first JoinGroup, the leader
runs Faust's assignor on metadata without any topic: "Ignoring missing topic" for each, then a KeyError on
the global table's changelog (`_global_table_standby_assignments`). aiokafka hands that error to "the user"
and its coordination routine waits until someone consumes it (`check_errors()`), which Faust never does
while it has no partitions: no heartbeat, no rejoin, idle for good (aiokafka 0.14, faust-streaming 0.15;
nothing here is mock-specific). `_guard_group_join` makes the leader wait for the metadata of every
subscribed topic before assigning, and `_watch_coordinator` consumes (and logs) any error aiokafka parks
that way, so the group is rejoined instead of stalling.

A rejoin whose SyncGroup fails with an unexpected answer is also pushed to every fetch waiting for the new
assignment (`SubscriptionState.abort_waiters`): Faust's fetch raised it and the worker crashed (2 of 6
rebalance-test runs with a busy core). The embedded broker answers INVALID_REQUEST to a follower's
SyncGroup that comes after the leader's (the leader's completes the sync at once; librdkafka
rdkafka_mock_cgrp.c), so a follower slowed by load meets it. `_guard_assignment_waits` makes such a wait go
on to the next assignment while the coordination routine is alive (it rejoins once `_watch_coordinator`
consumed the error); errors of a dead routine, and the specific ones (authorization), still reach Faust.
It wraps the wait itself, entered only while a reassignment is in progress: the first version wrapped
Faust's fetch, called for every batch, and `bench pipeline` measured it about 5% slower.

Upstream: aiokafka 0.14.0 aiokafka/consumer/group_coordinator.py `GroupCoordinator._perform_assignment`
(wrapped per coordinator instance), `GroupCoordinator._client` (`force_metadata_update`, `cluster`
`ClusterMetadata.partitions_for_topic`), `GroupCoordinator._pending_exception`, `_coordination_task`,
`_performed_join_prepare`, `check_errors`, `_push_error_to_user` (a plain `KafkaError` for an unexpected
JoinGroup/SyncGroup answer); aiokafka/consumer/subscription_state.py `SubscriptionState.abort_waiters`,
`wait_for_assignment` (awaited by every caller, never kept as a future);
aiokafka/coordinator/protocol.py `ConsumerProtocol.METADATA` (decodes the JoinGroup members'
subscriptions); aiokafka/consumer/consumer.py `AIOKafkaConsumer._coordinator`, `_closed`, `assignment`.
faust-streaming 0.15.3 faust/transport/drivers/aiokafka.py `AIOKafkaConsumerThread.on_start` (extended:
after the consumer started) and `on_thread_stop`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.coordinator.protocol import ConsumerProtocol
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.transport.options import RETRY_MAX_S

log = logging.getLogger(__name__)

# How long a group leader waits for the metadata of subscribed topics before assigning anyway (a topic
# that really does not exist must not block the group forever; the next rejoin tries again).
TOPIC_METADATA_WAIT_S = 30.0

RELIES_ON = (
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._perform_assignment"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._client"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._pending_exception"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._coordination_task"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._performed_join_prepare"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator.check_errors"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._push_error_to_user"),
    ("aiokafka.consumer.subscription_state", "SubscriptionState.abort_waiters"),
    ("aiokafka.consumer.subscription_state", "SubscriptionState.wait_for_assignment"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._subscription"),
    ("aiokafka.errors", "KafkaError"),
    ("aiokafka.coordinator.protocol", "ConsumerProtocol.METADATA"),
    ("aiokafka.coordinator.protocol", "ConsumerProtocolMemberMetadata.decode"),
    ("aiokafka.client", "AIOKafkaClient.force_metadata_update"),
    ("aiokafka.client", "AIOKafkaClient.cluster"),
    ("aiokafka.cluster", "ClusterMetadata.partitions_for_topic"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._coordinator"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._closed"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer.assignment"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.on_start"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.on_thread_stop"),
)


def missing_topics(cluster: Any, topics: set[str]) -> list[str]:
    """Topics of `topics` for which `cluster` (aiokafka ClusterMetadata) knows no partition."""
    return sorted(t for t in topics if not cluster.partitions_for_topic(t))


def _guard_group_join(coordinator: Any, wait_s: float) -> None:
    """Before the leader assigns partitions, wait until the metadata of every topic the group subscribes
    to is known, refreshing it as needed (see the module docstring)."""
    perform_assignment = coordinator._perform_assignment
    client = coordinator._client

    async def with_topic_metadata(response: Any) -> Any:
        topics: set[str] = set()
        for member in response.members:  # (member_id, [group_instance_id,] metadata)
            topics.update(ConsumerProtocol.METADATA.decode(member[-1]).subscription)
        deadline = time.monotonic() + wait_s
        delay = 0.1
        while missing := missing_topics(client.cluster, topics):
            if time.monotonic() >= deadline:
                log.error("assigning without metadata for %s after %.0f s", missing, wait_s)
                break
            log.warning("no metadata yet for %d subscribed topics (%s, ...): refreshing before assigning",
                        len(missing), missing[0])  # fmt: skip
            updated = await client.force_metadata_update()
            if not updated or missing_topics(client.cluster, topics):  # broker down, or topics not there yet
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        return await perform_assignment(response)

    coordinator._perform_assignment = with_topic_metadata


async def _watch_coordinator(consumer: Any, interval_s: float = 1.0) -> None:
    """aiokafka parks errors of its group coordination routine (a failed assignment, a failed heartbeat
    task, an unexpected JoinGroup/SyncGroup answer) until the application calls a consumer method that
    checks them, and stops coordinating until then. Faust only does so while it has partitions (and crashes
    on them, from its commit). Consumed here (logged, then the routine goes on and rejoins the group) when
    the worker has no partitions, or when a rejoin failed half-way: Faust's partitions were revoked for the
    rejoin, but aiokafka still lists the old assignment, so without this the worker neither consumed nor
    left the group (seen with a SyncGroup answered INVALID_REQUEST in a rebalance; it then crashed on
    Faust's next commit)."""
    while not consumer._closed:
        await asyncio.sleep(interval_s)
        coordinator = consumer._coordinator
        if coordinator is None or coordinator._pending_exception is None:
            continue
        rejoining = getattr(coordinator, "_performed_join_prepare", False)  # revoked, not yet re-assigned
        if consumer.assignment() and not rejoining:
            continue
        if coordinator._coordination_task.done():
            return  # the routine itself ended (closing or crashed): aiokafka raises that to Faust
        try:
            coordinator.check_errors()
        except Exception as exc:  # noqa: BLE001 - whatever it parked: log it, the routine rejoins
            log.error("consumer group coordination failed: %r; rejoining the group", exc)


def rejoin_failure(exc: BaseException, coordinator: Any) -> bool:
    """Whether an assignment wait's error is a failed rejoin the coordination routine recovers from: the plain
    `KafkaError` aiokafka wraps an unexpected JoinGroup/SyncGroup answer in, while the routine still runs."""
    return (type(exc) is kafka_errors.KafkaError and coordinator is not None
            and not coordinator._coordination_task.done())  # fmt: skip


def _guard_assignment_waits(consumer: Any) -> None:
    """A wait for the next assignment that a failed rejoin aborts (`rejoin_failure`) waits for the one
    after instead of raising (see the module docstring)."""
    wait_for_assignment = consumer._subscription.wait_for_assignment

    async def through_failed_rejoins() -> None:
        while True:
            try:
                return await wait_for_assignment()
            except kafka_errors.KafkaError as exc:
                if not rejoin_failure(exc, consumer._coordinator):
                    raise
                log.warning("a group rejoin failed while waiting for its assignment (%r): waiting for the next", exc)

    consumer._subscription.wait_for_assignment = through_failed_rejoins


class GroupJoinThread(faust_aiokafka.AIOKafkaConsumerThread):
    _watch_task: asyncio.Task | None = None

    async def on_start(self) -> None:
        """The consumer started (by the classes after this one), then its group join guarded."""
        await super().on_start()
        if self._consumer._coordinator is not None:
            _guard_group_join(self._consumer._coordinator, TOPIC_METADATA_WAIT_S)
            _guard_assignment_waits(self._consumer)
            self._watch_task = asyncio.ensure_future(_watch_coordinator(self._consumer))

    async def on_thread_stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        await super().on_thread_stop()
