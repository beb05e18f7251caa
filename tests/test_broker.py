"""The embedded broker command: topics pre-created with their partition counts, fixed port, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from lab.local import free_port
from streams.settings import Settings
from streams.topics import all_topics

pytestmark = pytest.mark.integration


def test_broker_creates_every_topic_on_a_fixed_port_and_stops_on_sigterm(tmp_path):
    port = free_port()
    addr = tmp_path / "addr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reelstream.cli", "broker", "--port", str(port), "--addr-file", str(addr)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not addr.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert addr.read_text().strip() == f"127.0.0.1:{port}"
        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        for name, partitions in all_topics(Settings()).items():
            assert len(meta.topics[name].partitions) == partitions, name
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "broker stopped" in out


def test_partition_for_matches_librdkafkas_murmur2_partitioner(tmp_path):
    from confluent_kafka import Producer

    from lab.recording import read_topic
    from streams.topics import partition_for

    port = free_port()
    addr = tmp_path / "addr"
    proc = subprocess.Popen([sys.executable, "-m", "reelstream.cli", "broker", "--port", str(port), "--addr-file",
                             str(addr), "--topic", "keys:4"], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        while not addr.exists():
            time.sleep(0.05)
        bootstrap = addr.read_text().strip()
        producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
        keys = [f"v{i:06d}".encode() for i in range(200)] + ["用户".encode(), b"x" * 300]
        for key in keys:
            producer.produce("keys", b"1", key)
        producer.flush(10)
        placed = {r.key: r.partition for r in read_topic(bootstrap, "keys")}
        assert placed == {k: partition_for(k, 4) for k in keys}
    finally:
        proc.terminate()
        proc.wait(10)
