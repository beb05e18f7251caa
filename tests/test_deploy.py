"""docker-compose.yml cannot run here (no Docker engine): check offline what can be checked."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from streams.settings import Settings, env_reference

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_structure():
    services = compose()["services"]
    assert {"kafka", "topics", "worker", "trainer", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["worker"]["command"] == ["reelstream", "worker"]
    assert services["worker"]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["trainer"]["command"] == ["reelstream", "trainer"]  # the refit is part of the deployment
    assert services["trainer"]["environment"] == services["worker"]["environment"]


def test_worker_environment_names_real_settings():
    known = {var for var, _ in env_reference(Settings())}
    env = compose()["services"]["worker"]["environment"]
    assert env and set(env) <= known, set(env) - known
    # and the values parse into a valid settings object
    settings = Settings(**{k.removeprefix("REELSTREAM_").lower(): v for k, v in env.items()})
    assert settings.bootstrap_servers == "kafka:9092"


def test_prometheus_scrapes_the_worker_port():
    env = compose()["services"]["worker"]["environment"]
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "reelstream"]
    assert job["dns_sd_configs"][0]["port"] == int(env["REELSTREAM_WEB_PORT"])
    assert job["dns_sd_configs"][0]["names"] == ["worker", "trainer"]


def test_grafana_provisioning_and_no_default_passwords():
    grafana = compose()["services"]["grafana"]
    ds = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    text = (ROOT / "docker-compose.yml").read_text()
    for key, value in grafana["environment"].items():
        if "PASSWORD" in key or key.endswith("_USER"):
            assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{key} must come from the environment"
    assert "password:" not in text.lower().replace("_password:", "")


def test_published_ports_bind_loopback_only():
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
