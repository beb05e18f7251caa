"""`reelstream demo`: the whole pipeline on this machine, on a committed sample, with a short summary."""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streams.settings import Settings

SAMPLE = Path(__file__).resolve().parent / "samples" / "demo.jsonl"
# Paced so the demo runs long enough for the item side's cadence: later events are served by ALS.
REPLAY_RATE = 1000.0


def run_demo(settings: Settings, sample: Path = SAMPLE, hold: Callable[[Any, dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:  # fmt: skip
    """Start broker, trainer and worker, replay the sample, read every output topic back, stop everything;
    `hold(stack, result)`: called before stopping, with everything still running (`demo --review`)."""
    from lab.local import LocalStack, wait_for
    from lab.recording import read_topic, replay

    t = settings.topics
    started = time.monotonic()
    with LocalStack() as stack:
        stack.start_broker()
        trainer = stack.start_trainer()  # the slow speed of the recommender, as deployed
        worker = stack.start_worker()
        sent = replay(stack.bootstrap, sample, rate=REPLAY_RATE)
        if sent.failed:
            raise RuntimeError(f"replay failed for {sent.failed} messages: {sent.first_error}")
        stack.wait_consumed(sent.sent)
        # The trainer's last refit on what was replayed, served by the worker to every user again.
        wait_for(lambda: trainer.metrics().get("reelstream_trainer_busy") == 0.0
                 and worker.metrics().get("reelstream_refresh_pending_users") == 0.0, 60, "trainer",
                 [trainer.log, worker.log])  # fmt: skip
        stack.wait_consumed(sent.sent)
        names = (t.recommendations, t.moderation_flags, t.dlq, t.review_queue, t.statements_of_reasons)
        out = {name: list(read_topic(stack.bootstrap, name)) for name in names}
        result = _result(settings, sent.sent, out, started)
        if hold is not None:
            hold(stack, result)
    return result


def _result(settings: Settings, sent: int, out: dict[str, list], started: float) -> dict[str, Any]:
    t = settings.topics
    recs = [orjson.loads(r.value) for r in out[t.recommendations] if r.value is not None]
    flags = [orjson.loads(r.value) for r in out[t.moderation_flags]]
    dlq = [orjson.loads(r.value) for r in out[t.dlq]]
    latest: dict[str, dict] = {}
    for rec in recs:
        latest[rec["user_id"]] = rec
    queued = {r.key for r in out[t.review_queue] if r.value is not None}
    pending: dict[bytes, Any] = {}
    for r in out[t.review_queue]:  # the compacted view: the latest value per item, tombstones removing
        pending[r.key] = r.value
    return {
        "summary": {
            "events_in": sent,
            "recommendations_out": len(recs),
            "flags_out": len(flags),
            "dlq_out": len(dlq),
            "users_with_recs": sum(1 for r in latest.values() if r["items"]),
            "recommendations_by_model": dict(collections.Counter(r["model_version"] for r in recs)),
            "review_queued": len(queued),
            "review_pending": sum(1 for v in pending.values() if v is not None),
            "statements_of_reasons": len(out[t.statements_of_reasons]),
            "seconds": round(time.monotonic() - started, 2),
        },
        "latest_recs": latest,
        "flags": flags,
        "dlq": dlq,
    }


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = result["summary"]
    console.print(
        f"[bold]reelstream demo[/]: {s['events_in']} messages in -> {s['recommendations_out']} recommendations "
        f"({s['users_with_recs']} users), {s['flags_out']} moderation flags, {s['dlq_out']} dead letters "
        f"in {s['seconds']} s\nrecommendations by model: {s['recommendations_by_model']}"
    )
    recs = Table(title="Latest recommendations (5 most recently served users)")
    for col in ("user", "model", "top videos (score)"):
        recs.add_column(col)
    for user, rec in sorted(result["latest_recs"].items(), key=lambda kv: -kv[1]["generated_at"])[:5]:
        items = ", ".join(f"{i['video_id']} ({i['score']:.2f})" for i in rec["items"][:5])
        recs.add_row(user, rec["model_version"], items or "-")
    console.print(recs)

    flagged = [f for f in result["flags"] if f["action"] != "allow"]
    actions = collections.Counter(f["action"] for f in result["flags"])
    table = Table(title=f"Flagged comments ({dict(actions)}), first 6")
    for col in ("action", "lang", "reasons", "text"):
        table.add_column(col, overflow="fold")
    for f in flagged[:6]:
        table.add_row(f["action"], f["lang"], ", ".join(f["reasons"]), _comment_text(f["event_id"])[:80])
    console.print(table)
    console.print(
        f"review queue: {s['review_queued']} comments queued for people ({s['review_pending']} pending), "
        f"{s['statements_of_reasons']} statements of reasons; the queue page: "
        f"[link]{result.get('review_url') or 'reelstream demo --review'}[/link]"
    )

    dlq = Table(title="Dead letters by reason")
    dlq.add_column("reason")
    dlq.add_column("count")
    dlq.add_column("example (first bytes)", overflow="fold")
    by_reason: dict[str, list[dict]] = collections.defaultdict(list)
    for d in result["dlq"]:
        by_reason[d["reason"]].append(d)
    for reason, items in sorted(by_reason.items()):
        raw = base64.b64decode(items[0]["raw"])[:60]
        dlq.add_row(reason, str(len(items)), repr(raw))
    console.print(dlq)


def _comment_text(event_id: str) -> str:
    """The sample's text for a flagged comment (flags carry ids and scores, not text)."""
    if not _TEXTS:
        from lab.recording import read_records

        for r in read_records(SAMPLE):
            try:
                obj = orjson.loads(r.value or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "comment":
                _TEXTS[str(obj.get("event_id"))] = str(obj.get("text"))
    return _TEXTS.get(event_id, "")


_TEXTS: dict[str, str] = {}


def serve_review(settings: Settings, show: Callable[[dict[str, Any]], None]) -> Callable[[Any, dict[str, Any]], None]:
    """`demo --review`: with the demo's broker and worker still running, `reelstream review` on its queue
    until Ctrl-C, so the queue link works (decisions go to the live worker)."""

    def hold(stack: Any, result: dict[str, Any]) -> None:
        import subprocess
        import sys

        from lab.local import wait_for

        url = f"http://{settings.review.host}:{settings.review.port}/"
        log = stack.workdir / "review.log"
        page = subprocess.Popen([sys.executable, "-m", "reelstream.cli", "review"], env=stack._env(),
                                stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for(lambda: _answers(url + "ready"), 60, "the review page", [log], page)
            show({**result, "review_url": url})
            print(f"serving the review queue at {url} (Ctrl-C stops the demo)", flush=True)
            page.wait()
        except KeyboardInterrupt:
            pass
        finally:
            page.terminate()
            page.wait(10)

    return hold


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
