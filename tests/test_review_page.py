"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium) over a
real worker on the embedded broker: sign-in, queued comments as text (a `<script>` comment included), a removal
and an approval by keyboard, and their decisions, overriding flags and statement of reasons on the topics.
Writes docs/review-page.png, the README's screenshot. Skipped where no Chromium is installed (CI installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from lab.local import LocalStack, free_port, wait_for
from lab.recording import read_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "review-page.png"
SIGN_IN = "correct-horse-battery-7"
SCRIPT = '<script>document.title="pwned"</script> great video, thanks for sharing'
COMMENTS = {  # event id -> text (the model's action today: allow, review, allow, block, allow)
    "c-script": SCRIPT,
    "c-insult": "you are a complete idiot and everyone hates you",
    "c-nice": "First! Loved the ending.",
    "c-spam": "check out my channel for free money http://spam.example",
    "c-zh": "这个视频太棒了",
}


def _browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("no Chromium here: apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900", "--lang=en"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_a_reviewer_removes_and_approves_by_keyboard_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By

    from streams.producer import make_producer, produce

    browser = _browser()
    env = {"REELSTREAM_REVIEW__SAMPLE_ALLOW": "1", "REELSTREAM_REVIEW__SAMPLE_BLOCK": "1"}  # every comment queued
    stack = LocalStack(env=env)
    page = None
    try:
        stack.start_broker()
        worker = stack.start_worker()
        producer = make_producer(stack.bootstrap)
        for n, (event_id, text) in enumerate(COMMENTS.items()):
            user = f"viewer-{n}"
            produce(producer, "events", orjson.dumps({"schema_version": 1, "event_id": event_id, "type": "comment",
                    "user_id": user, "video_id": "v7", "ts": 1.8e9 + n, "text": text}), user.encode())  # fmt: skip
        producer.flush(10)
        port = free_port()
        log = tmp_path / "review.log"
        page = subprocess.Popen(
            [sys.executable, "-m", "reelstream.cli", "review"], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "REELSTREAM_BOOTSTRAP_SERVERS": stack.bootstrap, "REELSTREAM_REVIEW__PORT": str(port),
                 "REELSTREAM_REVIEW__REVIEWERS": orjson.dumps({"ana": SIGN_IN}).decode()},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status(base + "/ready") == 200, 60, "the review page ready", [log], page)

        browser.get(base + "/")
        assert browser.current_url == base + "/login"  # nothing without signing in
        browser.find_element(By.ID, "reviewer").send_keys("ana")
        browser.find_element(By.ID, "password").send_keys("wrong")
        browser.find_element(By.ID, "sign-in").click()
        error = wait_for(lambda: browser.find_elements(By.ID, "error"), 10, "the sign-in answered", [log], page)
        assert "wrong password" in error[0].text, browser.page_source
        browser.find_element(By.ID, "reviewer").send_keys("ana")
        browser.find_element(By.ID, "password").send_keys(SIGN_IN)
        browser.find_element(By.ID, "sign-in").click()
        name = wait_for(lambda: browser.find_elements(By.ID, "reviewer-name"), 10, "signed in", [log], page)
        assert name[0].text == "ana"

        def queued() -> list:
            browser.refresh()
            items = browser.find_elements(By.CSS_SELECTOR, "article.item")
            return items if len(items) == len(COMMENTS) else []

        wait_for(queued, 120, "every comment on the page", [worker.log, log], worker.proc, interval=0.5)
        ids = [a.get_attribute("data-item-id") for a in browser.find_elements(By.CSS_SELECTOR, "article.item")]
        assert sorted(ids) == sorted(COMMENTS)
        script = browser.find_element(By.CSS_SELECTOR, f"article[data-item-id='c-script'] .text")
        assert script.text == SCRIPT  # shown as text: the markup is visible, not parsed
        assert browser.find_elements(By.CSS_SELECTOR, "#queue script") == [] and browser.title != "pwned"
        assert "script-src 'self'" in _headers(base + "/login")["Content-Security-Policy"]
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        # A form post without the session's CSRF token, or from another origin, is refused.
        session = {"Cookie": f"rs_session={browser.get_cookie('rs_session')['value']}"}
        form = b"item_id=c-nice&decision=remove&category=none"
        assert _status(base + "/decide", form, session) == 403
        csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        cross = {**session, "Origin": "http://evil.example"}
        assert _status(base + "/decide", form + f"&csrf={csrf}".encode(), cross) == 403

        def press(key: str) -> None:
            browser.find_element(By.TAG_NAME, "body").send_keys(key)

        def decide_by_keyboard(item_id: str, key: str, done: str) -> None:
            order = [a.get_attribute("data-item-id") for a in browser.find_elements(By.CSS_SELECTOR, "article.item")]
            for _ in range(order.index(item_id)):
                press("j")  # next
            current = browser.find_element(By.CSS_SELECTOR, "article.item.current")
            assert current.get_attribute("data-item-id") == item_id
            press(key)
            wait_for(lambda: f"done={done}" in browser.current_url, 30, f"{done} posted", [log], page)

        decide_by_keyboard("c-script", "r", "remove")
        assert browser.find_element(By.ID, "notice").text == "Removed."
        decide_by_keyboard("c-insult", "a", "approve")
        left = {a.get_attribute("data-item-id") for a in browser.find_elements(By.CSS_SELECTOR, "article.item")}
        assert left == set(COMMENTS) - {"c-script", "c-insult"}

        # The worker applied both: decisions, overriding flags, a statement of reasons for the removal, and
        # the two items tombstoned on the queue.
        def topic(name: str) -> list:
            return [(r.key, None if r.value is None else orjson.loads(r.value)) for r in read_topic(stack.bootstrap, name)]

        def applied() -> bool:
            overrides = {v["event_id"]: v for _, v in topic("moderation-flags") if v.get("decided_by") == "reviewer"}
            return len(overrides) == 2 and overrides

        overrides = wait_for(applied, 60, "the decisions applied", [worker.log], worker.proc)
        assert overrides["c-script"]["action"] == "block" and overrides["c-insult"]["action"] == "allow"
        assert {o["reviewer"] for o in overrides.values()} == {"ana"}
        decisions = [v for _, v in topic("review-decisions")]
        assert sorted((d["item_id"], d["decision"], d["reviewer"]) for d in decisions) == [
            ("c-insult", "approve", "ana"), ("c-script", "remove", "ana")]
        queue = topic("review-queue")
        assert {k.decode() for k, v in queue if v is None} == {"c-script", "c-insult"}
        script_item = next(v for k, v in queue if k == b"c-script" and v is not None)
        assert script_item["model_action"] != "block"  # so the removal is the first block: a human statement
        statements = {v["puid"]: v for _, v in topic("statements-of-reasons")}
        assert statements["c-script"]["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED"
        assert statements["c-spam"]["automated_decision"] == "AUTOMATED_DECISION_FULLY"  # the model's own block
        assert 'reelstream_review_decisions_total{category="none",decision="remove"}' in worker.metrics()
    finally:
        browser.quit()
        if page is not None:
            page.terminate()
            page.wait(10)
        stack.stop()
    assert SIGN_IN not in log.read_text()


def _headers(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return dict(r.headers)
