"""Embedded Kafka-protocol broker: librdkafka's mock cluster from the confluent-kafka wheel (ctypes).

For tests, CI and the one-machine demo (no JVM, no Docker here). It speaks the real wire protocol on
127.0.0.1; production points `REELSTREAM_BOOTSTRAP_SERVERS` at real Kafka and nothing else changes.
Facts and limits: ../shared/broker/README.md (memory only, no CreateTopics, random port unless forwarded).

Retention: the mock keeps at most 5 MiB and 100,000 message sets per partition and deletes the oldest
message sets beyond that (`rd_kafka_mock_partition_init` sets `max_size = 1024 * 1024 * 5`,
`max_cnt = 100000`; `rd_kafka_mock_msgset_new` prunes; librdkafka src/rdkafka_mock.c; no API changes it).
It behaves like a tiny `retention.bytes`: a consumer that falls more than 5 MiB behind on a partition
(a burst of ~1 MB messages is enough) gets OFFSET_OUT_OF_RANGE and resets past records it never read.
Real Kafka keeps data by its retention settings (7 days, unbounded size by default). The worker
dead-letters such holes as `offset_gap` (streams/transport/offset_gaps.py); tests feeding large messages must keep
each partition's unread backlog under PARTITION_LOG_MAX_BYTES.

Fetches: the mock answers a fetch with at most one message set (record batch) per partition, where Kafka
returns up to the partition's fetch size (measured: 30 records produced as separate batches took 30 fetches,
30 in one batch one; tests/test_transport.py). A topic whose records each go out as their own batch (a
worker's `interactions-by-video`) is then read one record per fetch round: streams/transport/fair_drain.py
is why such a partition still gets a round at every poll.
"""

from __future__ import annotations

import ctypes
import glob
import os
import select
import socket
import threading
from dataclasses import dataclass, field

_c = ctypes.c_void_p
PARTITION_LOG_MAX_BYTES = 5 * 1024 * 1024  # per partition, hard-coded in librdkafka's mock (see above)
PARTITION_LOG_MAX_MSGSETS = 100_000


def _load_librdkafka() -> ctypes.CDLL:
    import confluent_kafka

    libdir = os.path.join(os.path.dirname(confluent_kafka.__file__), os.pardir, "confluent_kafka.libs")
    libs = sorted(glob.glob(os.path.join(libdir, "librdkafka*.so*")))
    lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL("librdkafka.so.1")
    sig = {
        "rd_kafka_conf_new": ([], _c),
        "rd_kafka_conf_set": ([_c, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int),
        "rd_kafka_new": ([ctypes.c_int, _c, ctypes.c_char_p, ctypes.c_size_t], _c),
        "rd_kafka_mock_cluster_new": ([_c, ctypes.c_int], _c),
        "rd_kafka_mock_cluster_bootstraps": ([_c], ctypes.c_char_p),
        "rd_kafka_mock_topic_create": ([_c, ctypes.c_char_p, ctypes.c_int, ctypes.c_int], ctypes.c_int),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": ([_c, ctypes.c_int32], ctypes.c_int),
        "rd_kafka_mock_broker_set_host_port": ([_c, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
        "rd_kafka_mock_broker_set_down": ([_c, ctypes.c_int32], ctypes.c_int),
        "rd_kafka_mock_broker_set_up": ([_c, ctypes.c_int32], ctypes.c_int),
        "rd_kafka_mock_push_request_errors_array": (
            [_c, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)], None
        ),
        "rd_kafka_version_str": ([], ctypes.c_char_p),
    }
    for name, (args, res) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


class _Forwarder:
    """TCP forwarder from a fixed port to the mock's random one, so clients can use a known address."""

    def __init__(self, host: str, listen_port: int, target_port: int) -> None:
        self._target = target_port
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, listen_port))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="broker-forwarder").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [])
                for s in readable:
                    data = s.recv(262144)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


@dataclass
class MockCluster:
    """A running mock cluster in this process. `bootstrap` is what clients connect to."""

    topics: dict[str, int]
    port: int = 0
    host: str = "127.0.0.1"
    bootstrap: str = ""
    version: str = ""
    _lib: ctypes.CDLL | None = field(default=None, repr=False)
    _handle: int | None = field(default=None, repr=False)
    _rk: int | None = field(default=None, repr=False)

    def start(self) -> "MockCluster":
        lib = _load_librdkafka()
        err = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set(conf, b"log_level", b"3", err, 512)
        self._rk = lib.rd_kafka_new(0, conf, err, 512)
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new failed: {err.value.decode()}")
        self._handle = lib.rd_kafka_mock_cluster_new(self._rk, 1)
        if not self._handle:
            raise RuntimeError("librdkafka mock cluster could not be created")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._handle, 0)
        for name, partitions in self.topics.items():
            rc = lib.rd_kafka_mock_topic_create(self._handle, name.encode(), partitions, 1)
            if rc != 0:
                raise RuntimeError(f"could not create topic {name!r} ({partitions} partitions): error {rc}")
        bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self._handle).decode()
        if self.port:
            fwd = _Forwarder(self.host, self.port, int(bootstrap.rsplit(":", 1)[1]))
            lib.rd_kafka_mock_broker_set_host_port(self._handle, 1, self.host.encode(), fwd.port)
            bootstrap = f"{self.host}:{fwd.port}"
        self.bootstrap = bootstrap
        self.version = lib.rd_kafka_version_str().decode()
        self._lib = lib
        return self

    def set_down(self) -> None:
        """Fault injection: the broker stops answering (connections are closed)."""
        assert self._lib is not None
        self._lib.rd_kafka_mock_broker_set_down(self._handle, 1)

    def set_up(self) -> None:
        assert self._lib is not None
        self._lib.rd_kafka_mock_broker_set_up(self._handle, 1)

    def fail_next(self, api_key: int, error: int, count: int) -> None:
        """Fault injection: the next `count` requests of `api_key` (any client) are answered with `error`."""
        assert self._lib is not None
        errors = (ctypes.c_int * count)(*([error] * count))
        self._lib.rd_kafka_mock_push_request_errors_array(self._handle, api_key, count, errors)


def write_addr_file(path: str, bootstrap: str) -> None:
    """Atomically, so a waiting process never reads half an address."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(bootstrap + "\n")
    os.replace(tmp, path)
