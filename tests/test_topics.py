"""The per-topic erasure contract (streams/topics.py `erasure_contract`) and the topic configuration that
carries it out on real Kafka: every topic has one, user data leaves each by a tombstone or a bounded
retention, and `reelstream topics` states which."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from streams.settings import Settings, get_settings
from streams.topics import all_topics, erasure_contract, topic_config


def test_every_topic_has_an_erasure_contract() -> None:
    settings = Settings()
    assert set(erasure_contract(settings)) == set(all_topics(settings))


@pytest.mark.parametrize("retention_s", [3600, 30 * 86400])
def test_user_data_leaves_each_topic_by_a_tombstone_or_its_retention(retention_s: int) -> None:
    settings = Settings(user_data_retention_s=retention_s)
    for name, contract in erasure_contract(settings).items():
        config = topic_config(settings, name)
        if contract.mechanism == "tombstone":  # compaction removes what the tombstone shadows
            assert "compact" in config["cleanup.policy"], name
        elif contract.mechanism == "retention":
            assert config == {"cleanup.policy": "delete", "retention.ms": str(retention_s * 1000)}, name
        else:  # producers' topics and those without user data: the broker's defaults
            assert "retention.ms" not in config, name
    retained = {n for n, c in erasure_contract(settings).items() if c.mechanism == "retention"}
    t = settings.topics
    assert retained == {t.interactions_by_video, t.comments, t.moderation_flags, t.review_decisions,
                        t.appeal_outcomes, t.dlq}  # fmt: skip


def test_reelstream_topics_states_how_each_topic_forgets(monkeypatch) -> None:
    from reelstream.cli import app

    monkeypatch.setenv("REELSTREAM_USER_DATA_RETENTION_S", "7200")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["topics"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()}
    assert rows["comments"] == ["4", "delete", "retention; deleted after 2 hours"]
    assert rows["recommendations"] == ["4", "compact", "tombstone"]
    assert rows["review-queue"] == ["4", "compact,delete", "tombstone; deleted after 30 days"]
    assert rows["events"] == ["4", "delete", "producers"]
    assert set(rows) == set(all_topics(Settings()))
