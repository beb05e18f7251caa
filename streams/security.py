"""How every Kafka client of the pipeline authenticates and encrypts: TLS and SASL settings, and their two
translations (librdkafka's config keys; Faust's credentials for aiokafka).

One place, so the worker's Faust consumer and producer, its librdkafka output producer, the trainer, the
admin client of `reelstream topics --create` and `reelstream record`/`replay` reach the same cluster the
same way. PLAINTEXT (the default) adds nothing to any client's configuration.

Secrets are SecretStr: they print as `**********` (repr, `reelstream config`) and are unwrapped only here,
when a client is built.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(BaseModel):
    """REELSTREAM_SECURITY__*: the security protocol and what it needs (Kafka's own names, lower case)."""

    # hide_input_in_errors: a validation error would otherwise repeat the whole input, passwords included.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    protocol: Protocol = "PLAINTEXT"
    # TLS (SSL, SASL_SSL). No CA file: the system's trust store (public CAs).
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None  # client certificate (mutual TLS), PEM; with ssl_key_file
    ssl_key_file: str | None = None  # its private key, PEM
    ssl_key_password: None | SecretStr = None  # if that key is encrypted
    ssl_check_hostname: bool = True  # the broker's certificate must name the host dialled
    # SASL (SASL_PLAINTEXT, SASL_SSL).
    sasl_mechanism: Mechanism | None = None
    sasl_username: str | None = None
    sasl_password: None | SecretStr = None

    @field_validator("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password", "sasl_mechanism",
                     "sasl_username", "sasl_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable (compose's `${VAR:-}`) means not set."""
        return None if value == "" else value

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        """Reject settings that would be ignored or could not work, naming the variable to fix: a client
        must never fall back to plaintext, or fail later with a less clear error, because of a typo."""
        var = "REELSTREAM_SECURITY__"
        ssl_set = [n for n in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password")
                   if getattr(self, n) is not None]  # fmt: skip
        sasl_set = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, n) is not None]
        if ssl_set and not self.uses_ssl:
            raise ValueError(f"{', '.join(var + n.upper() for n in ssl_set)} set but {var}PROTOCOL is "
                             f"{self.protocol}: TLS settings need SSL or SASL_SSL")  # fmt: skip
        if sasl_set and not self.uses_sasl:
            raise ValueError(f"{', '.join(var + n.upper() for n in sasl_set)} set but {var}PROTOCOL is "
                             f"{self.protocol}: SASL settings need SASL_PLAINTEXT or SASL_SSL")  # fmt: skip
        if self.uses_sasl:
            missing = [var + n.upper() for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if not getattr(self, n)]  # fmt: skip
            if missing:
                raise ValueError(f"{var}PROTOCOL={self.protocol} needs {', '.join(missing)}")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError(f"mutual TLS needs both {var}SSL_CERT_FILE and {var}SSL_KEY_FILE")
        if self.ssl_key_password is not None and self.ssl_key_file is None:
            raise ValueError(f"{var}SSL_KEY_PASSWORD set without {var}SSL_KEY_FILE")
        for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{var}{name.upper()}={path}: no such file")
        return self


def librdkafka_config(security: KafkaSecurity) -> dict[str, Any]:
    """The librdkafka (confluent-kafka) settings for `security`; empty for PLAINTEXT, so plaintext
    clients are configured exactly as before."""
    if security.protocol == "PLAINTEXT":
        return {}
    conf: dict[str, Any] = {"security.protocol": security.protocol.lower()}
    if security.uses_ssl:
        if security.ssl_ca_file:
            conf["ssl.ca.location"] = security.ssl_ca_file
        if security.ssl_cert_file:
            conf["ssl.certificate.location"] = security.ssl_cert_file
            conf["ssl.key.location"] = security.ssl_key_file
        if security.ssl_key_password is not None:
            conf["ssl.key.password"] = security.ssl_key_password.get_secret_value()
        conf["ssl.endpoint.identification.algorithm"] = "https" if security.ssl_check_hostname else "none"
    if security.uses_sasl:
        assert security.sasl_username is not None and security.sasl_password is not None  # validated
        conf["sasl.mechanism"] = security.sasl_mechanism
        conf["sasl.username"] = security.sasl_username
        conf["sasl.password"] = security.sasl_password.get_secret_value()
    return conf


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context for aiokafka: verifies the broker against the CA file (else the system's trust
    store) and, when configured, presents the client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_ca_file)
    context.check_hostname = security.ssl_check_hostname
    if security.ssl_cert_file:
        key_pass = security.ssl_key_password.get_secret_value() if security.ssl_key_password else None
        context.load_cert_chain(security.ssl_cert_file, security.ssl_key_file, key_pass)
    return context


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """Faust's `broker_credentials` for `security` (None for PLAINTEXT). Faust hands them to every aiokafka
    consumer and producer it makes (faust/transport/drivers/aiokafka.py `credentials_to_aiokafka_auth`):
    SSLCredentials → security_protocol SSL + ssl_context; SASLCredentials → SASL_PLAINTEXT, or SASL_SSL when
    it has an ssl_context, with sasl_mechanism and sasl_plain_username/password (aiokafka uses these two
    for SCRAM as well as PLAIN)."""
    import faust

    if security.protocol == "PLAINTEXT":
        return None
    context = ssl_context(security) if security.uses_ssl else None
    if not security.uses_sasl:
        return faust.SSLCredentials(context)
    assert security.sasl_password is not None  # validated
    login = {"username": security.sasl_username, "password": security.sasl_password.get_secret_value()}
    return faust.SASLCredentials(**login, mechanism=security.sasl_mechanism, ssl_context=context)


def client_config(bootstrap_servers: str, security: KafkaSecurity | None = None, **overrides: Any) -> dict[str, Any]:
    """A librdkafka client's config: `bootstrap.servers`, the security settings (`security`, else the
    environment's REELSTREAM_SECURITY__*: tools given another --bootstrap still authenticate as
    configured), then `overrides` (librdkafka names; pass a dict with ** for dotted names)."""
    if security is None:
        from streams.settings import get_settings

        security = get_settings().security
    return {"bootstrap.servers": bootstrap_servers, **librdkafka_config(security), **overrides}
