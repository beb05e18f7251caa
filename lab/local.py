"""A whole pipeline on this machine: embedded broker and worker processes, for the demo, tests and benches.

Workers are real processes (`reelstream worker`), so what runs here is what runs in production; only the
broker differs (librdkafka's mock cluster instead of Kafka).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tails(paths: Iterable[Path]) -> str:
    """The last 2,000 characters of each log that exists, for an error message."""
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in paths if p.exists())


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    logs: Iterable[Path] = (),
    proc: subprocess.Popen | None = None,
    interval: float = 0.1,
) -> Any:
    """Poll every `interval` seconds until predicate() is truthy and return it. On timeout, or if `proc` exits first, raise with the
    tails of `logs`, so a failure says what the processes saw."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{log_tails(logs)}")
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s\n{log_tails(logs)}")


def scrape(port: int) -> dict[str, float]:
    """A worker's reelstream_* samples from /metrics as {'name{labels}': value} (labels as exposed, e.g.
    'reelstream_events_total{type="watch"}'), parsed by prometheus_client; empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {
        _sample_key(s.name, s.labels): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("reelstream_")
    }


def _sample_key(name: str, labels: dict[str, str]) -> str:
    """A sample's name with its labels, in the exposition's syntax (label values escaped as exposed)."""
    if not labels:
        return name
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in labels.values())
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped)) + "}"


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def consumed(metrics: dict[str, float]) -> float:
    """Input messages a worker process has accounted for (valid, duplicate or dead-lettered)."""
    return sum(total(metrics, name) for name in (
        "reelstream_events_total", "reelstream_duplicate_events_total", "reelstream_dlq_messages_total"))  # fmt: skip


def recommendations(metrics: dict[str, float]) -> float:
    """Recommendation lists a worker has produced: one per served user per micro-batch, so per event it says how
    many users a workload serves (benches with different user mixes are compared per served user with it)."""
    return metrics.get('reelstream_outputs_total{output="recommendations"}', 0.0)


def offset_gaps(metrics: dict[str, float]) -> int:
    """Input records the broker deleted before the worker read them (dead-lettered as offset gaps)."""
    return int(metrics.get('reelstream_dlq_messages_total{reason="offset_gap"}', 0.0))


@dataclass
class Worker:
    proc: subprocess.Popen
    web_port: int
    log: Path
    data_dir: Path | None = None  # its local store (REELSTREAM_DATA_DIR)

    def metrics(self) -> dict[str, float]:
        return scrape(self.web_port)

    def cpu_seconds(self, main_thread: bool = False) -> float:
        """User + system CPU time of the worker process so far (Linux /proc); with `main_thread`, of its main
        thread alone: the event loop, which every agent shares, is what saturates first."""
        stat = f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat" if main_thread else f"/proc/{self.proc.pid}/stat"
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class LocalStack:
    """Broker process plus worker processes, sharing one environment of REELSTREAM_* settings."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="reelstream-")))
    bootstrap: str = ""
    broker: subprocess.Popen | None = None
    workers: list[Worker] = field(default_factory=list)
    trainers: list[Worker] = field(default_factory=list)
    _producer: Any = field(default=None, init=False, repr=False)  # `send`'s, made at its first call

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "reelstream.cli", *args]

    def _env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **self.env, **extra}
        if self.bootstrap:
            env["REELSTREAM_BOOTSTRAP_SERVERS"] = self.bootstrap
        return env

    def start_broker(self, timeout: float = 30) -> str:
        addr = self.workdir / "broker.addr"
        log = self.workdir / "broker.log"
        self.broker = subprocess.Popen(
            self._cmd("broker", "--addr-file", str(addr)), env=self._env(), stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        wait_for(addr.exists, timeout, "broker", [log], self.broker)
        self.bootstrap = addr.read_text().strip()
        return self.bootstrap

    def _launch(self, role: str, started: list[Worker], loglevel: str, data_dir: Path | None = None) -> Worker:
        """A `reelstream <role>` process serving /metrics on a free port, logging to the workdir. Each process
        has its own local store directory (`data_dir`: a dead one's, to restart it on its own disk)."""
        port = free_port()
        log = self.workdir / f"{role}-{len(started)}.log"
        data_dir = data_dir or self.workdir / f"{role}-{len(started)}-data"
        proc = subprocess.Popen(
            self._cmd(role, "--loglevel", loglevel),
            env=self._env(REELSTREAM_WEB_PORT=str(port), REELSTREAM_DATA_DIR=str(data_dir)),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        started.append(Worker(proc, port, log, data_dir))
        return started[-1]

    def launch_worker(self, loglevel: str = "WARNING", data_dir: Path | None = None) -> Worker:
        """Start a worker process and return at once (start_worker waits until it serves metrics)."""
        return self._launch("worker", self.workers, loglevel, data_dir)

    def start_trainer(self, timeout: float = 60, loglevel: str = "WARNING") -> Worker:
        """Start a trainer process (`reelstream trainer`) and wait until it serves /metrics."""
        trainer = self._launch("trainer", self.trainers, loglevel)
        wait_for(lambda: "reelstream_trainer_active" in "".join(trainer.metrics()), timeout, "trainer", [trainer.log],
                 trainer.proc)  # fmt: skip
        return trainer

    def start_worker(self, timeout: float = 60, loglevel: str = "WARNING", data_dir: Path | None = None) -> Worker:
        """Start a worker and wait until it serves metrics; `data_dir`: start it on that local store (a
        killed worker's: a restart on the same disk), else on a new, empty one (another machine)."""
        worker = self._launch("worker", self.workers, loglevel, data_dir)
        wait_for(lambda: "reelstream_build_info" in "".join(worker.metrics()), timeout, "worker", [worker.log],
                 worker.proc)  # fmt: skip
        return worker

    def wait_consumed(self, expected: int, timeout: float = 120, settle: float = 1.0, interval: float = 0.1) -> None:
        """Until workers have accounted for `expected` input messages and their outputs stopped changing.
        Each poll scrapes every worker's /metrics (~4 ms of its CPU): a bench polls less often."""
        def done() -> bool:
            live = [w.metrics() for w in self.workers if w.proc.poll() is None]
            accounted = sum(consumed(m) for m in live)
            forwarded = sum(m.get('reelstream_outputs_total{output="comments"}', 0.0) for m in live)
            scored = sum(
                m.get('reelstream_outputs_total{output="moderation_flags"}', 0.0)
                + m.get("reelstream_comments_erased_total", 0.0) for m in live
            )
            return accounted >= expected and scored >= forwarded

        wait_for(done, timeout, f"processing {expected} messages", [w.log for w in self.workers], interval=interval)
        last, stable_since = None, time.monotonic()
        while time.monotonic() - stable_since < settle:
            now = [total(w.metrics(), "reelstream_outputs_total") for w in self.workers]
            if now != last:
                last, stable_since = now, time.monotonic()
            time.sleep(0.1)

    def send(self, topic: str, value: bytes, key: str) -> None:
        """Produce one record to the broker as an outside client would, and wait until it is acknowledged."""
        from streams.producer import make_producer, produce

        if self._producer is None:
            self._producer = make_producer(self.bootstrap)
        produce(self._producer, topic, value, key.encode())
        self._producer.flush(10)

    def stop(self) -> None:
        for w in self.workers + self.trainers:
            w.stop()
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()
            self.broker.wait(10)

    def __enter__(self) -> "LocalStack":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Stop everything; keep the workdir (logs) only when leaving on an exception."""
        self.stop()
        if exc_type is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
