"""Monitoring: metric names, consumer lag, index metering, Prometheus config and alert rules (promtool),
the Grafana dashboard against what a worker exports, the plots, and a real Prometheus scraping a real worker."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from faust.types import TP

import streams.app  # noqa: F401 - registers everything a worker exports (consumer lag included)
from monitoring import metrics
from monitoring.consumer import ConsumerLag
from monitoring.metered import MeteredIndex

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
DASHBOARDS = MON / "grafana" / "dashboards"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def exported_names() -> set[str]:
    """Series names as scraped: counters gain _total, infos _info; histograms are named by their family."""
    suffix = {"counter": "_total", "info": "_info"}
    return {f.name + suffix.get(f.type, "") for f in metrics.REGISTRY.collect()}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# --- names -------------------------------------------------------------------------------------------


def test_metric_names_follow_prometheus_conventions():
    families = list(metrics.REGISTRY.collect())
    assert all(f.name.startswith("reelstream_") for f in families)
    for f in families:
        labels = {k for s in f.samples for k in s.labels}
        assert not labels & {"user_id", "video_id", "user", "video", "event_id"}, f.name
    names = exported_names()
    expected = {
        "reelstream_events_total", "reelstream_dlq_messages_total", "reelstream_event_to_output_seconds",
        "reelstream_consumer_lag_messages", "reelstream_consumer_lag_seconds", "reelstream_rebalances_total",
        "reelstream_als_update_seconds", "reelstream_index_items", "reelstream_index_operations_total",
        "reelstream_index_search_seconds", "reelstream_model_inference_seconds", "reelstream_batch_events",
        "reelstream_batch_seconds", "reelstream_moderation_flags_total", "reelstream_moderation_categories_total",
        "reelstream_build_info",
    }  # fmt: skip
    assert expected <= names


def test_build_info_keeps_the_worker_version_beside_model_versions():
    metrics.set_build("als-x", "mod-y")
    text = metrics.exposition().decode()
    line = next(x for x in text.splitlines() if x.startswith("reelstream_build_info{"))
    assert 'version="' in line and 'recommender="als-x"' in line and 'moderation="mod-y"' in line


# --- consumer lag ------------------------------------------------------------------------------------


class FakeConsumer:
    def __init__(self, high: dict[TP, int | None], read: dict[TP, int], paused: set[TP] = frozenset()) -> None:
        self.high, self._read_offset = high, collections.defaultdict(lambda: None, read)
        self._paused_partitions = set(paused)

    def assignment(self) -> set[TP]:
        return set(self.high)

    def highwater(self, tp: TP) -> int | None:
        return self.high[tp]


class FakeSignal:
    def __init__(self) -> None:
        self.receivers = []

    def connect(self, fun) -> None:
        self.receivers.append(fun)

    def send(self, app, tps) -> None:
        for fun in self.receivers:
            fun(app, tps, signal=self)


def _lag_samples(lag: ConsumerLag) -> dict[tuple[str, str, str], float]:
    return {
        (s.name, s.labels["topic"], s.labels["partition"]): s.value for f in lag.collect() for s in f.samples
    }


def test_consumer_lag_follows_the_current_assignment():
    a, b, c, own = TP("events", 0), TP("events", 1), TP("videos", 0), TP("reelstream-users-changelog", 0)
    app = SimpleNamespace(
        _consumer=None, tables=SimpleNamespace(changelog_topics={own.topic}),
        on_partitions_assigned=FakeSignal(), on_partitions_revoked=FakeSignal(),
    )  # fmt: skip
    lag = ConsumerLag(clock=lambda: 1000.0)
    lag.watch(app)
    assert _lag_samples(lag) == {}  # no consumer yet: nothing, and none is created

    # `own`: this worker's table changelog, paused after recovery (written, never read): no lag to report.
    # events/1 is paused too (as during recovery), but a stream partition: its lag is reported.
    app._consumer = FakeConsumer({a: 100, b: 50, c: None, own: 500}, {a: 89, b: 49}, paused={own, b})
    lag.seen("events", 0, 990.0)
    lag.seen("events", 1, 999.0)
    assert _lag_samples(lag) == {
        ("reelstream_consumer_lag_messages", "events", "0"): 10,  # offsets 90..99 unread
        ("reelstream_consumer_lag_seconds", "events", "0"): 10.0,
        ("reelstream_consumer_lag_messages", "events", "1"): 0,
        ("reelstream_consumer_lag_seconds", "events", "1"): 0.0,
    }  # videos/0: no high watermark known yet

    before = sample("reelstream_rebalances_total")
    app.on_partitions_revoked.send(app, {a})
    app._consumer = FakeConsumer({b: 60}, {b: 49})
    app.on_partitions_assigned.send(app, {b})
    assert sample("reelstream_rebalances_total") == before + 1
    # events/0 is gone (no stale series); events/1 now lags but its last timestamp is still known.
    assert _lag_samples(lag) == {
        ("reelstream_consumer_lag_messages", "events", "1"): 10,
        ("reelstream_consumer_lag_seconds", "events", "1"): 1.0,
    }
    assert ("events", 0) not in lag.last_timestamp


# --- index -------------------------------------------------------------------------------------------


def test_metered_index_counts_operations_and_times_searches():
    from indexer.exact import ExactIndex

    index = MeteredIndex(ExactIndex(4))
    up, rm = sample("reelstream_index_operations_total", op="upsert"), sample("reelstream_index_operations_total", op="remove")
    searches = sample("reelstream_index_search_seconds_count")
    index.upsert(["a", "b", "c"], np.eye(4, dtype=np.float32)[:3])
    assert index.remove(["a", "zz"]) == 1
    hits = index.search(np.ones((1, 4), dtype=np.float32), 2)
    assert {v for v, _ in hits[0]} == {"b", "c"} and len(index) == 2 and "b" in index and index.dim == 4
    assert sample("reelstream_index_operations_total", op="upsert") == up + 3
    assert sample("reelstream_index_operations_total", op="remove") == rm + 1
    assert sample("reelstream_index_search_seconds_count") == searches + 1


# --- Prometheus config and rules ------------------------------------------------------------------


def _promtool(*args: str, cwd: Path) -> str:
    proc = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_promtool
def test_prometheus_config_is_valid_and_loads_the_rules(tmp_path):
    for name in ("prometheus.yml", "rules.yml"):  # rule_files are relative to the config
        shutil.copy(MON / name, tmp_path / name)
    out = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "1 rule files found" in out


@needs_promtool
def test_alert_rules_are_valid_and_cover_the_runbook():
    out = _promtool("check", "rules", "rules.yml", cwd=MON)
    assert "SUCCESS" in out
    alerts = {r["alert"] for g in yaml.safe_load((MON / "rules.yml").read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "ReelstreamWorkerDown", "ReelstreamConsumerLagGrowing", "ReelstreamDLQRate",
        "ReelstreamLatencyP99OverBudget", "ReelstreamBlockRateAnomaly", "ReelstreamNoActiveTrainer",
        "ReelstreamReviewQueueStale",
    }  # fmt: skip


@needs_promtool
def test_alert_rules_unit_tests():
    _promtool("test", "rules", "rules_test.yml", cwd=MON)


def test_rule_exprs_name_only_exported_metrics():
    exprs = [r["expr"] for g in yaml.safe_load((MON / "rules.yml").read_text())["groups"] for r in g["rules"]]
    assert _unknown_metrics(exprs) == set()


# --- Grafana -----------------------------------------------------------------------------------------

_METRIC = re.compile(r"\breelstream_[a-z0-9_]+")


def _unknown_metrics(exprs: list[str]) -> set[str]:
    """Names in `exprs` that no worker series has (after the histogram/counter series suffixes)."""
    names = exported_names()
    used = {re.sub(r"_(bucket|sum|count|created)$", "", m) for e in exprs for m in _METRIC.findall(e)}
    return {m for m in used if m not in names and re.sub(r"_total$", "", m) + "_total" not in names}


def test_dashboard_queries_name_only_exported_metrics():
    dashboards = list(DASHBOARDS.glob("*.json"))
    assert dashboards
    for path in dashboards:
        dash = json.loads(path.read_text())
        targets = [t for p in dash["panels"] for t in p.get("targets", [])]
        assert targets, path
        assert all(t["datasource"]["uid"] == "prometheus" for t in targets)
        assert _unknown_metrics([t["expr"] for t in targets]) == set(), path
        titles = " ".join(p["title"].lower() for p in dash["panels"])
        for topic in ("throughput", "latency", "lag", "dead letters", "flags", "model latency", "index size",
                      "review queue", "review decisions", "agreement"):  # fmt: skip
            assert topic in titles


def test_dashboard_provider_points_at_the_mounted_directory():
    provider = yaml.safe_load((MON / "grafana/provisioning/dashboards/reelstream.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{provider['options']['path']}:ro" in mounts


# --- plots -------------------------------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plots_write_pngs(tmp_path):
    from monitoring.plots import bench_timeline, flag_counts, flag_rates, hit_rate_curves

    rng = np.random.default_rng(0)
    lat = [[t, float(v)] for t, v in zip(np.linspace(0, 5, 500), rng.lognormal(3, 0.5, 500))]
    assert _is_png(bench_timeline({"throughput": [[0.5, 900.0], [1.0, 1200.0]], "latency": lat}, tmp_path / "b.png"))
    curves = {"streaming": [[250, 25], [500, 75]], "popularity": [[250, 18], [500, 40]]}
    assert _is_png(hit_rate_curves(curves, tmp_path / "e.png"))
    flags = [
        {"action": "allow", "reasons": []},
        {"action": "block", "reasons": ["hate>=0.90", "toxic>=0.90"]},
        {"action": "review", "reasons": ["toxic>=0.50"]},
    ]
    counts = flag_counts(flags)
    assert counts == {"hate": {"block": 1}, "toxic": {"block": 1, "review": 1}}
    assert _is_png(flag_rates(counts, len(flags), tmp_path / "f.png"))


# --- a real scrape -----------------------------------------------------------------------------------


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            assert result, what
            return result
        time.sleep(0.25)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (apt-get install prometheus)")
def test_prometheus_scrapes_a_worker_replaying_the_sample(tmp_path):
    from lab.demo import SAMPLE
    from lab.generator import FAULTS
    from lab.local import LocalStack, free_port
    from lab.recording import read_records, replay

    expected_dlq = collections.Counter(
        FAULTS[v.decode()] for r in read_records(SAMPLE) for k, v in r.headers if k == "x-reelstream-fault"
    )
    expected_dlq.pop(None, None)  # the duplicate is absorbed, not dead-lettered
    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        shutil.copy(MON / "rules.yml", tmp_path / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [
                {"job_name": "reelstream", "static_configs": [{"targets": [f"127.0.0.1:{worker.web_port}"]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [
                "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'data'}", "--storage.tsdb.retention.time=1h",
            ],  # fmt: skip
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            sent = replay(stack.bootstrap, SAMPLE)
            assert sent.failed == 0
            stack.wait_consumed(sent.sent)
            _until(lambda: _query(port, 'up{job="reelstream"} == 1'), 20, "worker scraped and up")
            dlq_total = sum(expected_dlq.values())
            _until(
                lambda: [r for r in _query(port, "sum(reelstream_dlq_messages_total)") if float(r["value"][1]) == dlq_total],
                15, f"Prometheus has all {dlq_total} dead letters",
            )  # fmt: skip
            dlq = {r["metric"]["reason"]: float(r["value"][1]) for r in _query(port, "reelstream_dlq_messages_total")}
            assert dlq == {reason: float(n) for reason, n in expected_dlq.items()}
            events = {r["metric"]["type"]: float(r["value"][1]) for r in _query(port, "reelstream_events_total")}
            assert all(events[t] > 0 for t in ("watch", "like", "share", "skip", "comment", "user_delete"))
            # Only the count: replay keeps the sample's 2026-01 timestamps, so every latency is months long.
            count = _query(port, 'reelstream_event_to_output_seconds_count{output="recommendations"}')
            assert float(count[0]["value"][1]) > 0
            lag = _query(port, 'reelstream_consumer_lag_messages{topic="events"}')
            assert lag and all(float(r["value"][1]) == 0 for r in lag)  # caught up
            _until(lambda: _query(port, "reelstream_index_items > 0"), 15, "item vectors reached the index")
            assert _query(port, 'reelstream_moderation_flags_total{action="allow"} > 0')
            build = _query(port, "reelstream_build_info")[0]["metric"]
            assert {"version", "recommender", "moderation"} <= set(build)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
                groups = json.load(r)["data"]["groups"]
            assert groups and all(rule["health"] != "err" for g in groups for rule in g["rules"])
        finally:
            prom.terminate()
            prom.wait(10)
            log.close()
