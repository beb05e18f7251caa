"""docker-compose.yml cannot run here (no Docker engine): check offline what can be checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
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


def test_compose_file_follows_the_compose_specification_schema():
    """Checked against the published JSON schema of the Compose specification (compose-spec/compose-spec,
    schema/compose-spec.json at 170098b, Apache-2.0, vendored in tests/schemas)."""
    import copy
    import json

    import jsonschema

    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    broken = copy.deepcopy(compose())
    broken["services"]["worker"]["restart"] = ["always"]
    broken["services"]["worker"]["comand"] = ["reelstream", "worker"]  # a misspelt key
    assert len(list(validator.iter_errors(broken))) >= 2  # the schema does reject what is wrong


def _image_env(bootstrap: str, data_dir: Path, port: int) -> dict[str, str]:
    """What the worker container gets: compose's environment (kafka:9092 becomes the embedded broker's
    address), the image's REELSTREAM_DATA_DIR, and nothing of this test process's environment."""
    import sys

    env = {k: str(v) for k, v in compose()["services"]["worker"]["environment"].items()}
    env |= {"REELSTREAM_BOOTSTRAP_SERVERS": bootstrap, "REELSTREAM_DATA_DIR": str(data_dir),
            "REELSTREAM_WEB_HOST": "127.0.0.1", "REELSTREAM_WEB_PORT": str(port),
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/nonexistent"}  # fmt: skip
    return env


@pytest.mark.integration
def test_the_worker_starts_as_the_image_runs_it_unprivileged_in_a_read_only_directory(tmp_path):
    """As the Dockerfile does: user nobody, a working directory it cannot write (/app is root's), the data
    directory the image creates for nobody, compose's environment (the embedded broker creates the topics
    with compose's partition count: it does not serve the admin API compose's topics service uses). The
    worker must consume and serve."""
    import os
    import shutil
    import subprocess
    import sys

    from confluent_kafka import Producer

    from lab.local import LocalStack, free_port, scrape, wait_for
    from lab.recording import read_topic

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run the worker as nobody")
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    data_dir = tmp_path / "var-lib-reelstream"
    data_dir.mkdir()
    shutil.chown(data_dir, "nobody")
    tmp_path.chmod(0o755)
    app_dir.chmod(0o555)  # root's, read-only for everyone
    port = free_port()
    partitions = str(compose()["services"]["worker"]["environment"]["REELSTREAM_PARTITIONS"])
    with LocalStack(env={"REELSTREAM_PARTITIONS": partitions}) as stack:
        stack.start_broker()
        env = _image_env(stack.bootstrap, data_dir, port)

        def as_nobody(*args: str, **kwargs) -> subprocess.Popen:
            # uid/gid nobody, no groups. This machine's interpreter lives under /root (mode 700), so the
            # process keeps one capability, CAP_DAC_READ_SEARCH: reading and path search past permission
            # bits, never writing (the image's nobody reads /app and /usr/local the same way).
            drop = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=+dac_read_search",
                    "--ambient-caps=+dac_read_search"]  # fmt: skip
            cmd = [shutil.which("setpriv"), *drop, sys.executable, "-m", "reelstream.cli", *args]
            return subprocess.Popen(cmd, cwd=app_dir, env=env, **kwargs)

        log = stack.workdir / "image-worker.log"
        worker = as_nobody("worker", stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "reelstream_build_info" in "".join(scrape(port)), 90, "worker as nobody", [log], worker)
            event = {"schema_version": 1, "event_id": "img-1", "type": "like", "user_id": "img-u", "video_id": "v1",
                     "ts": 1.8e9}  # fmt: skip
            producer = Producer({"bootstrap.servers": stack.bootstrap})
            producer.produce("events", json.dumps(event).encode(), b"img-u")
            producer.flush(10)
            wait_for(lambda: any(r.key == b"img-u" for r in read_topic(stack.bootstrap, "recommendations")), 60,
                     "a recommendation from the worker run as nobody", [log], worker)  # fmt: skip
        finally:
            worker.terminate()
            worker.wait(30)
    assert list(app_dir.iterdir()) == []  # nothing written where it runs
    assert any(data_dir.rglob("*")), "the local store is in the data directory"
    assert all(p.owner() == "nobody" for p in data_dir.rglob("*"))
