"""Security settings (REELSTREAM_SECURITY__*): validation, masking of secrets, and their translation for
librdkafka and for Faust/aiokafka. SASL is only checked here, as configuration: the embedded broker has no
SASL, so no SASL handshake runs in the test suite (TLS does: tests/test_tls.py)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.security import KafkaSecurity, client_config, faust_credentials, librdkafka_config
from tests.pki import KEY_PASS, make_pki

HIDDEN = "s3cr3t-do-not-print"  # a SASL password: must never be printed


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def env(monkeypatch):
    """Set REELSTREAM_* variables for a fresh Settings(); the cached get_settings() is cleared around."""
    from streams.settings import get_settings

    get_settings.cache_clear()
    yield lambda variables: [monkeypatch.setenv(f"REELSTREAM_{k}", v) for k, v in variables.items()]
    get_settings.cache_clear()


def _mtls(pki: Path, **more: object) -> KafkaSecurity:
    """SSL with the test CA and the client certificate, its key encrypted."""
    return KafkaSecurity(**{"protocol": "SSL", "ssl_ca_file": str(pki / "ca.crt"),
                            "ssl_cert_file": str(pki / "client.crt"), "ssl_key_file": str(pki / "client.key"),
                            "ssl_key_password": KEY_PASS, **more})  # fmt: skip


def _sasl(protocol: str, mechanism: str, pki: Path) -> KafkaSecurity:
    tls = {"ssl_ca_file": str(pki / "ca.crt")} if protocol == "SASL_SSL" else {}
    return KafkaSecurity(**{"protocol": protocol, "sasl_mechanism": mechanism, "sasl_username": "svc",
                            "sasl_password": HIDDEN, **tls})  # fmt: skip


def _aiokafka_auth(security: KafkaSecurity) -> dict:
    """What Faust hands aiokafka for these credentials (its own translation, as the worker uses it)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return credentials_to_aiokafka_auth(faust_credentials(security))


# --- defaults: PLAINTEXT changes nothing -------------------------------------------------------------


def test_plaintext_is_the_default_and_adds_nothing():
    from streams.settings import Settings

    security = Settings().security
    assert security.protocol == "PLAINTEXT"
    assert librdkafka_config(security) == {}
    assert faust_credentials(security) is None
    assert client_config("h:1", security, **{"group.id": "g"}) == {"bootstrap.servers": "h:1", "group.id": "g"}
    assert _aiokafka_auth(security) == {"security_protocol": "PLAINTEXT"}


def test_the_environment_reaches_the_settings(env, pki):
    from streams.settings import Settings, get_settings

    env({"SECURITY__PROTOCOL": "SASL_SSL", "SECURITY__SSL_CA_FILE": str(pki / "ca.crt"),
         "SECURITY__SASL_MECHANISM": "SCRAM-SHA-256", "SECURITY__SASL_USERNAME": "svc",
         "SECURITY__SASL_PASSWORD": HIDDEN, "SECURITY__SSL_CERT_FILE": ""})  # fmt: skip
    security = Settings().security
    assert (security.protocol, security.sasl_mechanism, security.sasl_username) == ("SASL_SSL", "SCRAM-SHA-256", "svc")
    assert security.sasl_password.get_secret_value() == HIDDEN
    assert security.ssl_cert_file is None  # an empty variable is unset
    # Tools without a Settings of their own (record, replay: only --bootstrap) use the environment's.
    assert client_config("h:1")["sasl.username"] == "svc" and get_settings().security == security


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"protocol": "SASL_SSL"}, ("needs REELSTREAM_SECURITY__SASL_MECHANISM, REELSTREAM_SECURITY__SASL_USERNAME, "
                                    "REELSTREAM_SECURITY__SASL_PASSWORD")),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "SASL_PASSWORD"),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_password": "p"}, "SASL_USERNAME"),
        ({"protocol": "SSL", "ssl_ca_file": "/nonexistent/ca.pem"}, "SSL_CA_FILE=/nonexistent/ca.pem: no such file"),
        ({"protocol": "PLAINTEXT", "sasl_username": "u"}, "SASL settings need SASL_PLAINTEXT or SASL_SSL"),
        ({"protocol": "SSL", "sasl_password": "p"}, "SASL settings need"),
        ({"protocol": "PLAINTEXT", "ssl_ca_file": "x"}, "TLS settings need SSL or SASL_SSL"),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p",
          "ssl_ca_file": "x"}, "TLS settings need SSL or SASL_SSL"),
        ({"protocol": "SSL", "ssl_cert_file": "CERT"}, "mutual TLS needs both"),
        ({"protocol": "SSL", "ssl_key_password": "p"}, "SSL_KEY_PASSWORD set without"),
        ({"protocol": "TLS"}, "PLAINTEXT"),  # not a protocol: the allowed ones are listed
        ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"}, "SCRAM"),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_variable(fields, message, pki):
    fields = {k: str(pki / "client.crt") if v == "CERT" else v for k, v in fields.items()}
    with pytest.raises(ValidationError) as exc:
        KafkaSecurity(**fields)
    assert message in str(exc.value)


def test_a_refused_secret_is_not_echoed(env):
    from streams.settings import Settings

    env({"SECURITY__PROTOCOL": "SSL", "SECURITY__SASL_PASSWORD": HIDDEN})
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert "SASL settings need" in str(exc.value) and HIDDEN not in str(exc.value)


# --- masking --------------------------------------------------------------------------------------------


def test_reelstream_config_masks_every_secret(env, pki):
    from typer.testing import CliRunner

    from reelstream.cli import app
    from streams.settings import Settings

    env({"SECURITY__PROTOCOL": "SASL_SSL", "SECURITY__SASL_MECHANISM": "PLAIN", "SECURITY__SASL_USERNAME": "svc",
         "SECURITY__SASL_PASSWORD": HIDDEN, "SECURITY__SSL_CA_FILE": str(pki / "ca.crt"),
         "SECURITY__SSL_CERT_FILE": str(pki / "client.crt"), "SECURITY__SSL_KEY_FILE": str(pki / "client.key"),
         "SECURITY__SSL_KEY_PASSWORD": KEY_PASS})  # fmt: skip
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert HIDDEN not in result.output and KEY_PASS not in result.output
    lines = dict(line.split("=", 1) for line in result.output.splitlines())
    assert lines["REELSTREAM_SECURITY__SASL_PASSWORD"] == '"**********"'
    assert lines["REELSTREAM_SECURITY__SSL_KEY_PASSWORD"] == '"**********"'
    assert lines["REELSTREAM_SECURITY__SASL_USERNAME"] == '"svc"'
    assert lines["REELSTREAM_SECURITY__PROTOCOL"] == '"SASL_SSL"'
    settings = Settings()
    for text in (repr(settings), str(settings), repr(faust_credentials(settings.security))):
        assert HIDDEN not in text and KEY_PASS not in text


def test_unset_secrets_print_as_null():
    from streams.settings import Settings, env_reference

    rows = dict(env_reference(Settings()))
    assert rows["REELSTREAM_SECURITY__SASL_PASSWORD"] == "null"
    assert rows["REELSTREAM_SECURITY__PROTOCOL"] == '"PLAINTEXT"'


# --- librdkafka -----------------------------------------------------------------------------------------


def test_librdkafka_ssl_with_client_certificate(pki):
    assert librdkafka_config(_mtls(pki)) == {
        "security.protocol": "ssl",
        "ssl.ca.location": str(pki / "ca.crt"),
        "ssl.certificate.location": str(pki / "client.crt"),
        "ssl.key.location": str(pki / "client.key"),
        "ssl.key.password": KEY_PASS,
        "ssl.endpoint.identification.algorithm": "https",
    }
    no_ca = librdkafka_config(KafkaSecurity(protocol="SSL", ssl_check_hostname=False))
    assert no_ca == {"security.protocol": "ssl", "ssl.endpoint.identification.algorithm": "none"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_librdkafka_sasl(mechanism, protocol, pki):
    security = _sasl(protocol, mechanism, pki)
    conf = librdkafka_config(security)
    assert conf["security.protocol"] == protocol.lower()
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (mechanism, "svc", HIDDEN)
    assert ("ssl.ca.location" in conf) == (protocol == "SASL_SSL")
    # librdkafka itself accepts the configuration (it checks names and values when a client is made).
    from confluent_kafka import Producer

    Producer(client_config("127.0.0.1:9", security, log_level=0)).flush(0)


def test_librdkafka_accepts_the_tls_configuration(pki):
    from confluent_kafka import Producer

    Producer(client_config("127.0.0.1:9", _mtls(pki), log_level=0)).flush(0)  # loads CA, cert and decrypts the key


# --- Faust / aiokafka -----------------------------------------------------------------------------------


def test_faust_ssl_credentials_with_client_certificate(pki):
    auth = _aiokafka_auth(_mtls(pki))
    assert set(auth) == {"security_protocol", "ssl_context"} and auth["security_protocol"] == "SSL"
    context: ssl.SSLContext = auth["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "reelstream test CA"),),)]
    relaxed = _aiokafka_auth(KafkaSecurity(protocol="SSL", ssl_ca_file=str(pki / "ca.crt"), ssl_check_hostname=False))
    assert not relaxed["ssl_context"].check_hostname


def test_a_wrong_key_password_fails_at_start(pki):
    with pytest.raises(ssl.SSLError):
        faust_credentials(_mtls(pki, ssl_key_password="wrong"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_sasl_credentials_reach_aiokafka(mechanism, protocol, pki):
    from aiokafka.client import AIOKafkaClient

    auth = _aiokafka_auth(_sasl(protocol, mechanism, pki))
    assert auth["security_protocol"] == protocol and auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("svc", HIDDEN)  # PLAIN and SCRAM alike
    assert (auth["ssl_context"] is not None) == (protocol == "SASL_SSL")

    async def client() -> AIOKafkaClient:  # aiokafka validates the combination when a client is made
        return AIOKafkaClient(bootstrap_servers="127.0.0.1:9", **auth)

    made = asyncio.run(client())
    assert (made._security_protocol, made._sasl_mechanism) == (protocol, mechanism)


def test_the_worker_app_gets_the_credentials(env, pki):
    from faust.auth import SASLCredentials

    from models.recs.serving import load_recommender
    from models.text.base import load_comment_models
    from streams.app import create_app
    from streams.settings import Settings
    from tests.sinks import Sink

    env({"SECURITY__PROTOCOL": "SASL_SSL", "SECURITY__SSL_CA_FILE": str(pki / "ca.crt"),
         "SECURITY__SASL_MECHANISM": "SCRAM-SHA-512", "SECURITY__SASL_USERNAME": "svc",
         "SECURITY__SASL_PASSWORD": HIDDEN})  # fmt: skip
    settings = Settings()

    recommender, scorer = load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation)
    app = create_app(settings, recommender, scorer, output=Sink())
    creds = app.conf.broker_credentials
    assert isinstance(creds, SASLCredentials) and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.protocol.value == "SASL_SSL" and creds.username == "svc" and creds.password == HIDDEN
