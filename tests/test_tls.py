"""Every Kafka client of the pipeline through a TLS-only endpoint (with client certificates: mutual TLS).

The embedded broker speaks plaintext only, and clients reconnect to the address it advertises. So the
broker runs in its own network namespace (`unshare -n`) on 127.0.0.1:PORT there, and in the clients'
namespace stunnel accepts TLS on 127.0.0.1:PORT, the same address, and forwards to a Unix socket that a
forwarder inside the broker's namespace connects to the broker (tests/netns_broker.py). Nothing in the
clients' namespace answers plaintext on that port. A throwaway CA, server and client certificates (the
client key encrypted: REELSTREAM_SECURITY__SSL_KEY_PASSWORD) are made with the openssl command line
(tests/pki.py).

Through it: `reelstream replay` (librdkafka producer), a worker (Faust's aiokafka consumer and producer,
its librdkafka output producer), the trainer (librdkafka consumers and producer), `reelstream record`
(librdkafka consumer) and the admin client of `reelstream topics --create`; and a plaintext client and a
TLS client without a certificate are refused. SASL is not exercised here: the embedded broker has no
SASL (tests/test_security.py covers its configuration mapping).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from lab.local import LocalStack, free_port, wait_for
from tests.pki import KEY_PASS, make_pki

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("stunnel") is None, reason="stunnel4 not installed (apt-get install stunnel4)"),
    pytest.mark.skipif(
        shutil.which("unshare") is None or os.geteuid() != 0,
        reason="needs unshare -n (root) for the broker's own network namespace",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
USERS, EVENTS = 12, 120


def _tls_env(d: Path, bootstrap: str) -> dict[str, str]:
    return {
        "REELSTREAM_BOOTSTRAP_SERVERS": bootstrap,
        "REELSTREAM_SECURITY__PROTOCOL": "SSL",
        "REELSTREAM_SECURITY__SSL_CA_FILE": str(d / "ca.crt"),
        "REELSTREAM_SECURITY__SSL_CERT_FILE": str(d / "client.crt"),
        "REELSTREAM_SECURITY__SSL_KEY_FILE": str(d / "client.key"),
        "REELSTREAM_SECURITY__SSL_KEY_PASSWORD": KEY_PASS,
        "REELSTREAM_STORE": "memory",
    }


def _events_file(path: Path, topic: str) -> None:
    from lab.recording import Record, write_records

    records = []
    for i in range(EVENTS):
        user = f"tls-{i % USERS}"
        event = {"schema_version": 1, "event_id": f"e{i}", "type": "watch", "user_id": user,
                 "video_id": f"v{i % 17}", "ts": 1000.0 + i, "watch_ms": 9000, "duration_ms": 10000}  # fmt: skip
        records.append(Record(topic, -1, -1, None, user.encode(), orjson.dumps(event)))
    write_records(path, records)


class TlsFront:
    """The broker in its own network namespace, behind stunnel on the address it advertises."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.logs = [d / "broker.log", d / "stunnel.log"]

    def start(self) -> TlsFront:
        d, sock, addr = self.dir, self.dir / "broker.sock", self.dir / "broker.addr"
        plain_env = {k: v for k, v in os.environ.items() if not k.startswith("REELSTREAM_SECURITY__")}
        self.procs.append(subprocess.Popen(
            ["unshare", "-n", sys.executable, str(ROOT / "tests" / "netns_broker.py"), "--port", str(self.port),
             "--sock", str(sock), "--addr-file", str(addr)],
            env=plain_env, cwd=ROOT, stdout=self.logs[0].open("w"), stderr=subprocess.STDOUT,
        ))  # fmt: skip
        wait_for(lambda: addr.exists() and sock.exists(), 30, "broker in its namespace", self.logs, self.procs[0])
        assert addr.read_text().strip() == self.bootstrap  # what it advertises: where stunnel will listen
        (d / "stunnel.conf").write_text(
            "foreground = yes\npid =\ndebug = info\n"
            f"[kafka]\naccept = {self.bootstrap}\nconnect = {sock}\n"
            f"cert = {d / 'server.crt'}\nkey = {d / 'server.key'}\n"
            f"CAfile = {d / 'ca.crt'}\nverifyChain = yes\nrequireCert = yes\n"
        )
        self.procs.append(subprocess.Popen(["stunnel", str(d / "stunnel.conf")], stdout=self.logs[1].open("w"),
                                           stderr=subprocess.STDOUT))  # fmt: skip
        wait_for(lambda: "Configuration successful" in self.logs[1].read_text(), 30, "stunnel", self.logs,
                 self.procs[1])  # fmt: skip
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reelstream.cli", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def _refused(bootstrap: str, **conf: object) -> bool:
    """True if a librdkafka client with `conf` cannot read the cluster's metadata at `bootstrap`."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **conf}).list_topics(timeout=5)
    except KafkaException:
        return True
    return False


def test_every_client_works_through_tls_only():
    from confluent_kafka.admin import AdminClient

    from lab.recording import read_records
    from streams.security import KafkaSecurity, client_config
    from streams.settings import Settings

    d = Path(tempfile.mkdtemp(prefix="rs-tls-"))  # short: a Unix socket path has at most 107 bytes
    make_pki(d)
    front = TlsFront(d)
    try:
        front.start()
        env = _tls_env(d, front.bootstrap)
        prefix = "REELSTREAM_SECURITY__"
        security = KafkaSecurity(**{k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)})
        topics = Settings().topics

        # TLS is really required: plaintext, and TLS without a client certificate, are refused.
        assert _refused(front.bootstrap)
        assert _refused(front.bootstrap, **{"security.protocol": "ssl", "ssl.ca.location": str(d / "ca.crt")})
        meta = AdminClient(client_config(front.bootstrap, security)).list_topics(timeout=10)
        assert topics.events in meta.topics and [b.port for b in meta.brokers.values()] == [front.port]

        # `topics --create`: its admin client gets through TLS; the embedded broker has no CreateTopics
        # (nor a controller), so it ends with librdkafka's controller timeout: never a TLS error.
        create = subprocess.Popen([sys.executable, "-m", "reelstream.cli", "topics", "--create"],
                                  env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip

        with LocalStack(env=env, workdir=d / "stack") as stack:
            stack.workdir.mkdir()
            stack.bootstrap = front.bootstrap
            trainer = stack.start_trainer(timeout=90)
            worker = stack.start_worker(timeout=90)
            events = d / "events.jsonl"
            _events_file(events, topics.events)
            out = _cli(env, "replay", str(events))
            assert out.returncode == 0 and f"replayed {EVENTS} messages" in out.stdout and "0 failed" in out.stdout, out

            stack.wait_consumed(EVENTS, timeout=120)
            wait_for(lambda: trainer.metrics().get("reelstream_trainer_active") == 1.0
                     and trainer.metrics().get("reelstream_trainer_interactions", 0) > 0, 90,
                     "trainer reads through TLS", [trainer.log])  # fmt: skip

            recorded = d / "recs.jsonl"

            def recorded_users() -> set[str]:
                """Users with a recommendation in what `reelstream record` copied (outputs trail the counters)."""
                out = _cli(env, "record", topics.recommendations, str(recorded), "--timeout", "5")
                assert out.returncode == 0, out
                return {rec.key.decode() for rec in read_records(recorded) if rec.value}

            wanted = {f"tls-{u}" for u in range(USERS)}
            wait_for(lambda: recorded_users() == wanted, 60, "recommendations recorded through TLS", [worker.log],
                     interval=0.5)  # fmt: skip
            assert worker.proc.poll() is None and trainer.proc.poll() is None

        try:
            _, err = create.communicate(timeout=90)
        finally:
            create.kill()
        assert create.returncode != 0 and "controller" in err, err  # the embedded broker's limit, see above
        assert "SSL" not in err and "handshake" not in err.lower(), err
        stunnel = (d / "stunnel.log").read_text()
        # Every connection that got through presented the client certificate; the refused ones were seen.
        assert "Certificate accepted at depth=0: CN=reelstream-client" in stunnel, stunnel[-2000:]
        assert "wrong version number" in stunnel and "peer did not return a certificate" in stunnel
    except BaseException:
        print(f"logs kept in {d}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(d, ignore_errors=True)
    finally:
        front.stop()
