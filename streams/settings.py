"""The one frozen settings object. Every setting is read here, from REELSTREAM_* environment variables.

Nested sections use a double underscore: REELSTREAM_MODERATION__BATCH_SIZE=128.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.config import IndexSettings
from models.recs.config import RecsSettings
from models.text.config import ModerationSettings
from streams.security import KafkaSecurity


class TopicSettings(BaseModel):
    """Topic names. Partition counts are shared: Faust co-partitions tables with their streams."""

    model_config = ConfigDict(frozen=True)
    events: str = "events"
    videos: str = "videos"
    recommendations: str = "recommendations"
    moderation_flags: str = "moderation-flags"
    dlq: str = "events.dlq"
    comments: str = "comments"
    interactions_by_video: str = "interactions-by-video"
    item_vectors: str = "item-vectors"
    user_gram: str = "user-gram"
    models: str = "models"  # batch model versions published by the trainer (one partition)
    # The moderation workflow (streams/review.py, contracts/review.py).
    review_queue: str = "review-queue"
    review_decisions: str = "review-decisions"
    statements_of_reasons: str = "statements-of-reasons"
    appeal_outcomes: str = "appeal-outcomes"


class ReadApiSettings(BaseModel):
    """`reelstream recs-api` (streams/read_api.py): off unless a token is set."""

    model_config = ConfigDict(frozen=True)
    token: None | SecretStr = None  # required: every request must send `Authorization: Bearer <token>`
    host: str = "127.0.0.1"
    port: int = Field(6068, ge=0, le=65535)


class ReviewSettings(BaseModel):
    """The moderation workflow: what is queued for people, how long it is kept, and `reelstream review`."""

    model_config = ConfigDict(frozen=True)
    # Quality control: these shares of the comments the model allowed / blocked are queued too (chosen by a
    # hash of the event id, so a redelivery makes the same choice).
    sample_allow: float = Field(0.01, ge=0.0, le=1.0)
    sample_block: float = Field(0.05, ge=0.0, le=1.0)
    # A blocked comment can be appealed this long (DSA Art. 20: at least six months); its text is kept that long
    # in the worker's reviews table, at most `max_blocked_per_user` per user (oldest dropped first).
    appeal_window_s: float = Field(183 * 86400, gt=0)
    max_blocked_per_user: int = Field(100, ge=1)
    # Retention of review-queue on real Kafka (`reelstream topics --create`): compacted, and deleted after this.
    queue_retention_s: int = Field(30 * 86400, ge=3600)
    # `reelstream review`: reviewer name -> password (JSON); it will not start without one.
    reviewers: dict[str, SecretStr] = {}
    host: str = "127.0.0.1"
    port: int = Field(6070, ge=0, le=65535)
    session_ttl_s: float = Field(8 * 3600, gt=0)


class Settings(BaseSettings):
    # hide_input_in_errors: an invalid section would otherwise be echoed whole, secrets included.
    model_config = SettingsConfigDict(
        env_prefix="REELSTREAM_", env_nested_delimiter="__", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    app_id: str = "reelstream"
    bootstrap_servers: str = "127.0.0.1:9092"
    security: KafkaSecurity = KafkaSecurity()  # TLS / SASL of every Kafka client (streams/security.py)
    partitions: int = Field(4, ge=1)
    # Video events are few; one partition lets every worker replicate the catalog (a Faust GlobalTable).
    videos_partitions: int = Field(1, ge=1, le=1)
    topics: TopicSettings = TopicSettings()
    # How long topics that hold user data without a per-user key (interactions-by-video, comments,
    # moderation-flags, review-decisions, appeal-outcomes, the DLQ) keep it on real Kafka
    # (`reelstream topics --create`): an erased user's records there are gone by then (streams/topics.py
    # `erasure_contract`; README "User data and erasure").
    user_data_retention_s: int = Field(30 * 86400, ge=3600)
    # How user factors are written to interactions-by-video (contracts.models.pack_factor): "packed", a
    # quarter of the bytes; "json", numbers, as workers before 2026-12-06 wrote and alone can read. Every
    # version reads both: set "json" while a rolling upgrade still runs older workers, then unset it.
    item_factors: Literal["packed", "json"] = "packed"

    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)

    # Input limits: anything beyond goes to the DLQ with a reason.
    max_message_bytes: int = Field(1_000_000, ge=1024)
    max_text_chars: int = Field(5000, ge=1)

    # Micro-batching of the interactions agent.
    batch_size: int = Field(1000, ge=1)
    batch_max_wait_s: float = Field(0.05, gt=0)

    # Faust/broker tuning (see ../shared/broker/README.md for why).
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    commit_interval_s: float = 0.5
    model_poll_interval_s: float = Field(10.0, gt=0)  # how often a worker looks for new saved ALS and comment models
    fetch_max_wait_ms: int = Field(20, ge=1, le=5000)  # see streams/transport/fetch_wait.py
    # librdkafka compression of the worker's and trainer's outputs, changelogs included (a user's record is
    # their whole history: gzip shrinks it several times). gzip: the one codec aiokafka (Faust's table
    # recovery) reads without extra libraries.
    output_compression: Literal["none", "gzip"] = "none"
    # The users table's local store (streams/tables.py OutputTable). "rocksdb": on disk under `data_dir`, so a
    # restart reads its own state and only the changelog's tail, and memory is bounded by the caches below;
    # "memory": rebuilt from the whole changelog at every start, held in full (tests, throwaway runs).
    store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: str = "reelstream-data"  # one per worker process; keep it across restarts (a volume)
    users_cache_size: int = Field(50_000, ge=1)  # decoded user records kept in memory (rocksdb)
    store_block_cache_mib: int = Field(256, ge=8)  # RocksDB block cache, shared out over the table's partitions
    # Erasure in the local stores' files: keys deleted since the last tick are compacted out of RocksDB's
    # files (streams/tables.py OutputTable.purge_deleted), so an erased user leaves the disk within this.
    store_purge_interval_s: float = Field(60.0, gt=0)

    recs: RecsSettings = RecsSettings()
    read_api: ReadApiSettings = ReadApiSettings()
    review: ReviewSettings = ReviewSettings()
    moderation: ModerationSettings = ModerationSettings()
    index: IndexSettings = IndexSettings()

    @property
    def broker_url(self) -> str:
        """Faust's broker URL list for the same servers (our aiokafka transport, streams/transport/)."""
        return ";".join(f"reelstream://{s.strip()}" for s in self.bootstrap_servers.split(","))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def _printable(value: object) -> object:
    """JSON for what json.dumps cannot encode: secrets masked (str(SecretStr) is '**********'), models as dicts."""
    if isinstance(value, SecretStr):
        return str(value)
    if isinstance(value, dict):  # reviewers: names shown, passwords masked
        return {k: _printable(v) for k, v in value.items()}
    assert isinstance(value, BaseModel), type(value)
    return value.model_dump()


def env_reference(settings: Settings) -> list[tuple[str, str]]:
    """Every setting as (environment variable, effective value as JSON), nested sections flattened; secrets
    masked."""
    import json

    def walk(prefix: str, obj: BaseModel) -> list[tuple[str, str]]:
        rows = []
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            var = f"{prefix}{name.upper()}"
            if isinstance(value, BaseModel):
                rows += walk(var + "__", value)
            else:
                rows.append((var, json.dumps(value, default=_printable)))
        return rows

    return walk("REELSTREAM_", settings)
