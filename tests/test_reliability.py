"""Reliability: kill -9 during a replay, a broker outage, the right to erasure, and the safety checks.

The integration tests run real worker processes on the embedded broker (lab/chaos.py does the work and
the audit; `reelstream bench chaos --json` runs the same). Outputs may repeat; the final state may not.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest

from lab.chaos import audit, fault_points, last_values, reconcile, uncommitted
from lab.local import wait_for

ROOT = Path(__file__).resolve().parent.parent


# --- kills and outages ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_kill_9_three_times_during_a_replay_loses_nothing_and_counts_nothing_twice():
    from lab.chaos import derived_ok, run_chaos

    result = run_chaos(kills=3, outage_s=0, events=2500, users=120, seed=11, rate=100)
    print(result.report())
    assert result.crashes == 0
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems
    assert result.dlq == result.dlq_expected > 0  # each malformed message once (distinct source offsets)
    # The item side resumed exactly: every (video, user) confidence as in the same replay without faults; and
    # after a refit of the quiescent state, the vectors and Gram every worker serves are that run's.
    assert result.derived["item_state_mismatches"] == 0, result.derived
    assert derived_ok(result.derived), result.derived


@pytest.mark.integration
def test_a_30_s_broker_outage_mid_replay_is_survived_without_a_restart():
    from lab.chaos import run_chaos

    result = run_chaos(kills=0, outage_s=30, events=1500, users=100, seed=12, rate=100, reference=False)
    assert result.crashes == 0  # the one worker ran throughout: no kill, no restart, no exit
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems
    assert result.dlq == result.dlq_expected


@pytest.mark.integration
@pytest.mark.parametrize("down_from", ["before the worker starts", "before its first group join"])
def test_a_worker_starting_inside_a_broker_outage_gets_its_partitions_once_the_broker_is_back(down_from):
    """Before the fix: started while the broker was down, the worker exited (aiokafka could not bootstrap);
    down between bootstrap and the first join, it joined with no topic metadata once the broker was back,
    Faust's assignor failed ("Ignoring missing topic", then a KeyError on the catalog changelog), aiokafka
    parked that error for a caller Faust never makes, and the worker stayed idle with no partitions."""
    import signal

    from lab.chaos import Feeder
    from lab.local import LocalStack
    from streams.settings import Settings

    s = Settings()
    kinds = ["watch", "like", "comment", "share", "watch", "skip"]
    events = [_event(f"o-{i}", f"out-{i % 40}", kinds[i % 6], f"vid-{i % 12}", 10.0 + i) for i in range(400)]
    with LocalStack() as stack:
        stack.start_broker()
        if down_from == "before the worker starts":
            stack.broker.send_signal(signal.SIGUSR1)
        worker = stack.launch_worker(loglevel="INFO")
        log = lambda: worker.log.read_text(errors="replace")  # noqa: E731
        if down_from == "before its first group join":
            # Faust's conductor waits 1 s after this line before the consumer subscribes and joins
            wait_for(lambda: "Waiting for tables to be registered" in log(), 120, "worker start", [worker.log],
                     worker.proc)  # fmt: skip
            stack.broker.send_signal(signal.SIGUSR1)
        # the worker has met the outage (a failed connection), and is still running
        wait_for(lambda: "Unable connect to" in log() or "Unable to bootstrap" in log(), 60, "the outage seen",
                 [worker.log], worker.proc)  # fmt: skip
        stack.broker.send_signal(signal.SIGUSR2)
        feeder = Feeder(stack.bootstrap, _records(s, events), rate=None)
        feeder.start()
        feeder.join()
        assert not feeder.errors, feeder.errors[:3]
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "all input committed", [worker.log], worker.proc)
        result = audit(stack.bootstrap, s, events)
        assert worker.proc.poll() is None, "the worker exited"
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems


def test_fault_points_are_seeded_and_fall_in_the_middle_of_the_stream():
    import random

    points = fault_points(random.Random(3), 1000, 4)
    assert points == fault_points(random.Random(3), 1000, 4) and points == sorted(points)
    assert 100 <= points[0] and points[-1] < 900


def test_the_audit_catches_loss_double_counting_and_leftovers():
    """The audit must fail when the state is wrong, or a passing chaos run proves nothing."""
    valid = [_event("e1", "u1", "like", "v1", 1.0), _event("e2", "u1", "comment", "v2", 2.0),
             _event("e3", "u2", "watch", "v1", 3.0), _event("d2", "u2", "user_delete", "v1", 4.0)]  # fmt: skip
    row = {"e1": ["e1", "v1", "like", 1.0, 0.0, None], "e2": ["e2", "v2", "comment", 2.0, 0.0, None]}
    good = {"state": {"u1": [row["e1"], row["e2"]], "u2": None},
            "recs": {"u1": [{"source_event_id": "e2"}], "u2": [{"source_event_id": "e3"}, None]}, "flagged": {"e2"}}

    def check(**bad) -> tuple[int, int, int]:
        a = reconcile(500, valid, bad.get("state", good["state"]), bad.get("recs", good["recs"]),
                      bad.get("flagged", good["flagged"]), {})  # fmt: skip
        return a.lost, a.double_counted, a.unexpected

    assert check() == (0, 0, 0)
    assert check(state={"u1": [row["e2"]], "u2": None}) == (1, 0, 0)  # e1 lost
    assert check(state={"u1": [row["e1"], row["e1"], row["e2"]], "u2": None}) == (0, 1, 0)  # e1 twice
    assert check(state={"u1": [row["e1"], row["e2"]], "u2": [["e3", "v1", "watch", 3.0, 1.0, None]]}) == (0, 0, 1)
    assert check(recs={"u1": [{"source_event_id": "e1"}], "u2": [None]}) == (1, 0, 0)  # last event unserved
    assert check(recs={"u1": good["recs"]["u1"], "u2": [None, {"source_event_id": "e3"}]}) == (0, 0, 1)
    assert check(flagged=set()) == (1, 0, 0)  # a comment without a flag


# --- erasure --------------------------------------------------------------------------------------------
def _event(event_id: str, user: str, kind: str, video: str, ts: float, **extra) -> dict:
    e = {"schema_version": 1, "event_id": event_id, "type": kind, "user_id": user, "video_id": video, "ts": ts}
    return e | {"watch": {"watch_ms": 9000, "duration_ms": 10000}, "comment": {"text": "so good", "lang": "en"}}.get(
        kind, {}) | extra  # fmt: skip


def _records(settings, events: list[dict]):
    from lab.recording import Record

    return [Record(settings.topics.events, -1, -1, None, e["user_id"].encode(), orjson.dumps(e)) for e in events]


@pytest.mark.integration
def test_user_delete_leaves_no_trace_in_state_and_no_later_recommendation():
    from lab.chaos import Feeder
    from lab.local import LocalStack
    from lab.recording import Record, read_topic
    from streams.settings import Settings
    from streams.topics import CATALOG_TABLE, USERS_TABLE, changelog

    s = Settings()
    t = s.topics
    kinds = ["watch", "like", "comment", "share", "watch", "skip"]
    videos = [Record(t.videos, -1, -1, None, f"vid-{i}".encode(), orjson.dumps(
        {"schema_version": 1, "video_id": f"vid-{i}", "type": "upload", "ts": 1.0})) for i in range(12)]  # fmt: skip
    before = [_event(f"{u}-{i}", u, kinds[i % 6], f"vid-{i}", 10.0 + i) for u in ("gone-a", "back-b", "keep-c")
              for i in range(8)]  # fmt: skip
    after = [
        _event("del-a", "gone-a", "user_delete", "vid-0", 50.0),
        _event("del-b", "back-b", "user_delete", "vid-0", 50.0),
        # erased within the same burst as its events: nothing of theirs may surface
        *[_event(f"gone-d-{i}", "gone-d", kinds[i], f"vid-{i}", 51.0 + i) for i in range(4)],
        _event("del-d", "gone-d", "user_delete", "vid-0", 56.0),
        _event("back-b-new", "back-b", "like", "vid-9", 60.0),  # acts again: a fresh record
        *[_event(f"keep-c-later-{i}", "keep-c", "watch", f"vid-{i}", 70.0 + i) for i in range(3)],
    ]
    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        for batch in (videos + _records(s, before), _records(s, after)):
            feeder = Feeder(stack.bootstrap, batch, rate=None)
            feeder.start()
            feeder.join()
            assert not feeder.errors
            wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "all input committed", [worker.log])
        tables = {name: last_values(stack.bootstrap, name) for name in
                  (changelog(s, USERS_TABLE), changelog(s, CATALOG_TABLE), t.item_vectors)}  # fmt: skip
        recs = [(r.key.decode(), r.value) for r in read_topic(stack.bootstrap, t.recommendations)]
        # interactions-by-video: one message per partition, a list of [video_id, user_id, factor, confidence]
        by_video = [m for r in read_topic(stack.bootstrap, t.interactions_by_video) for m in orjson.loads(r.value)]
        result = audit(stack.bootstrap, s, [orjson.loads(r.value) for r in _records(s, before + after)])
        assert worker.proc.poll() is None
    users = tables[changelog(s, USERS_TABLE)]
    assert users[b'"gone-a"'] is None and users.get(b'"gone-d"') is None  # tombstones on the changelog
    assert [r[0] for r in orjson.loads(users[b'"back-b"'])["events"]] == ["back-b-new"]
    assert len(orjson.loads(users[b'"keep-c"'])["events"]) == 11
    snapshot = b"".join(k + v for table in tables.values() for k, v in table.items() if v is not None)
    for user in (b"gone-a", b"gone-d"):
        assert user not in snapshot, f"{user!r} remains in the final table state"
        own = [v for k, v in recs if k == user.decode()]
        assert own and own[-1] is None, "the last recommendation of an erased user must be a tombstone"
    # a's recommendations stop at the tombstone; b is served again once it acts
    a = [v for k, v in recs if k == "gone-a"]
    assert all(v is None for v in a[a.index(None):])
    assert orjson.loads([v for k, v in recs if k == "back-b"][-1])["source_event_id"] == "back-b-new"
    # factors: every video a touched was told to drop a's factor (item side)
    dropped = {m[0] for m in by_video if m[1] == "gone-a" and m[2] is None}
    assert dropped == {e["video_id"] for e in before if e["user_id"] == "gone-a"}
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems


# --- safety checks --------------------------------------------------------------------------------------
def _repo_files(*suffixes: str) -> list[Path]:
    """Files git tracks or would track (ignored ones, like .venv, excluded)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    here = Path(__file__).resolve()  # this file names the patterns it looks for
    return [ROOT / p for p in out if p.endswith(suffixes) and (ROOT / p).is_file() and ROOT / p != here]


def test_every_torch_load_in_the_repo_uses_weights_only():
    calls = []
    for path in _repo_files(".py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                base = node.func.value
                if isinstance(base, ast.Name) and base.id == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                assert all(a.name != "load" for a in node.names), f"{path}: import torch.load under another name"
    assert calls, "no torch.load found: the check would prove nothing"
    assert all(ok for _, ok in calls), [where for where, ok in calls if not ok]


def test_no_pickle_based_loading_of_files():
    for path in _repo_files(".py"):
        text = path.read_text()
        assert "allow_pickle=True" not in text and "pickle.load(" not in text, path


def test_oversized_texts_and_messages_go_to_the_dlq(settings):
    from contracts.events import InvalidMessage, parse_event

    e = _event("e1", "u1", "comment", "v1", 1.0)
    limits = {"max_bytes": settings.max_message_bytes, "max_text_chars": settings.max_text_chars}
    assert settings.max_text_chars == 5000 and settings.max_message_bytes == 1_000_000
    parse_event(orjson.dumps(e | {"text": "x" * settings.max_text_chars}), **limits)
    for text, reason in (("x" * (settings.max_text_chars + 1), "text_too_long"), ("x" * 1_000_001, "too_large")):
        with pytest.raises(InvalidMessage) as err:
            parse_event(orjson.dumps(e | {"text": text}), **limits)
        assert err.value.reason == reason


SECRET = re.compile(
    r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|xox[baprs]-[0-9A-Za-z-]{10,}|gh[pousr]_[0-9A-Za-z]{30,}"
    r"|(password|passwd|secret|api_key|apikey|token)\s*[:=]\s*['\"]?(?!\$\{)[^\s'\"$]{6,})",
    re.IGNORECASE,
)


def test_no_credentials_in_repository_files():
    found = []
    for path in _repo_files(".py", ".yml", ".yaml", ".toml", ".json", ".md", ".cfg", ".ini", ".env", "Makefile"):
        if path.stat().st_size > 2_000_000:
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = SECRET.search(line)
            if m:
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {m.group(0)[:40]}")
    assert not found, found


def test_settings_read_credentials_and_addresses_only_from_the_environment(monkeypatch):
    from streams.settings import Settings

    for var in ("REELSTREAM_WEB_HOST", "REELSTREAM_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.web_host == "127.0.0.1" and s.bootstrap_servers.startswith("127.0.0.1:")
    monkeypatch.setenv("REELSTREAM_WEB_HOST", "10.0.0.5")
    assert Settings().web_host == "10.0.0.5"
    assert Settings.model_config.get("env_file") is None  # no .env file is read: the environment only


def test_the_worker_web_server_binds_the_configured_loopback_address(settings):
    from streams.app import create_app
    from tests.sinks import Sink

    class Stub:
        model_version = "stub"
        gram = np.zeros((2, 2))

        def add_video(self, video_id: str, ts: float | None = None) -> None:
            pass

        def saved_videos(self) -> list[str]:
            return []

    app = create_app(settings, Stub(), Stub(), output=Sink())
    assert app.conf.web_bind == "127.0.0.1" and app.conf.web_host == "127.0.0.1"
