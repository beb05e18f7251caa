"""Comment moderation through a real worker on the embedded broker: new comment-model weights saved where
the worker loaded its own are served without a restart, and their version stamps every flag after."""

from __future__ import annotations

import shutil

import orjson
import pytest

from lab.local import LocalStack, wait_for
from lab.recording import read_topic

pytestmark = pytest.mark.integration


def _comment(event_id: str, text: str) -> bytes:
    return orjson.dumps({"schema_version": 1, "event_id": event_id, "type": "comment", "user_id": "mod-u1",
                         "video_id": "v1", "ts": 1.8e9, "text": text, "lang": "zh"})  # fmt: skip


def test_new_comment_weights_are_served_without_a_restart_and_stamp_the_flags(tmp_path):
    from models.text.base import load_comment_models
    from models.text.comments import SHIPPED_DIR, WEIGHTS_FILE
    from models.text.config import ModerationSettings
    from models.text.static_embeddings import TOKENIZER_FILE
    from streams.producer import make_producer
    from streams.settings import Settings

    model_dir = tmp_path / "comment-model"
    model_dir.mkdir()
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        shutil.copyfile(SHIPPED_DIR / name, model_dir / name)
    first = load_comment_models(ModerationSettings(model_dir=str(model_dir), device="cpu"))
    s = Settings()
    env = {"REELSTREAM_MODERATION__MODEL_DIR": str(model_dir), "REELSTREAM_MODEL_POLL_INTERVAL_S": "0.5"}
    with LocalStack(env=env) as stack:
        stack.start_broker()
        worker = stack.start_worker()
        producer = make_producer(stack.bootstrap)

        def flag(event_id: str, text: str) -> dict:
            producer.produce(s.topics.events, key=b"mod-u1", value=_comment(event_id, text))
            producer.flush(30)

            def found() -> dict | None:
                flags = (orjson.loads(r.value) for r in read_topic(stack.bootstrap, s.topics.moderation_flags))
                return next((f for f in flags if f["event_id"] == event_id), None)

            wait_for(lambda: found() is not None, 60, f"flag of {event_id}", [worker.log], worker.proc)
            return found()  # type: ignore[return-value]

        before = flag("c1", "垃圾视频，滚")
        assert before["model_version"] == first.model_version
        assert {"spam", "hate"} <= set(before["abstained"]) and not any(r.startswith("spam") for r in before["reasons"])
        first.save(model_dir / WEIGHTS_FILE, "comment-net-hot-swap")
        wait_for(lambda: 'moderation="comment-net-hot-swap"' in "".join(worker.metrics()), 60, "the new weights served",
                 [worker.log], worker.proc)  # fmt: skip
        after = flag("c2", "垃圾视频，滚")
        assert after["model_version"] == "comment-net-hot-swap" and worker.proc.poll() is None
        assert after["scores"] == pytest.approx(before["scores"], abs=1e-6)  # the same weights, a new version
