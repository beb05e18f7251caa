"""`reelstream review`: the reviewers' page over the review queue.

Why a process of its own, fed by the `review-queue` topic: the queue is keyed by item and compacted, with a
tombstone once an item is decided or its user erased, so its latest values are exactly the pending items
of every partition; this process reads them all from the beginning without joining the workers' group
(assign, no commits) and writes decisions to `review-decisions`, keyed by user id, where the worker that owns
the user applies them (streams/review.py). Nothing here writes the queue itself.

Security: it will not start without a reviewer (`REELSTREAM_REVIEW__REVIEWERS`, name -> password, from the
environment); passwords are compared in constant time; a session is a random token in an HttpOnly,
SameSite=Strict cookie, kept in memory and expiring; every form post carries the session's CSRF token (the
login form a double-submit one) and a cross-origin `Origin` is refused. Every text is escaped by Jinja2's
autoescape (comments are hostile input), and the Content-Security-Policy allows no inline script at all,
so markup that got through would still not run. It binds 127.0.0.1 unless `REELSTREAM_REVIEW__HOST` says so.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from contracts.review import CATEGORIES
from streams.compacted_view import CompactedView
from streams.review import decision_record
from streams.settings import Settings

log = logging.getLogger(__name__)
PAGE_DIR = Path(__file__).resolve().parent / "review_page"
SHOWN = 50  # items rendered per page load, oldest first (the count shows them all)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")  # fmt: skip


class PendingItems(CompactedView):
    """The latest `review-queue` value per item (tombstones remove), read by a background thread; items this
    process decided are hidden until the worker's tombstone arrives (or a new kind of the item: escalated)."""

    def __init__(self, settings: Settings, bootstrap: str | None = None) -> None:
        super().__init__(settings, settings.topics.review_queue, "review-page", bootstrap)
        self._items: dict[str, dict[str, Any]] = {}
        self._hidden: dict[str, str] = {}  # item_id -> the kind it had when decided here

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            items = [i for k, i in self._items.items() if self._hidden.get(k) != i["kind"]]
        return sorted(items, key=lambda i: (i["queued_at"], i["item_id"]))

    def get(self, item_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(item_id)
            return None if item is None or self._hidden.get(item_id) == item["kind"] else item

    def hide(self, item_id: str, kind: str) -> None:
        with self._lock:
            self._hidden[item_id] = kind

    def _apply(self, key: bytes, value: bytes | None) -> None:
        item_id = key.decode("utf-8", "replace")
        with self._lock:
            if value is None:
                self._items.pop(item_id, None)
                self._hidden.pop(item_id, None)
                return
            try:
                item = orjson.loads(value)
                item["kind"], item["queued_at"], item["user_id"], item["text"]  # noqa: B018 - what the page needs
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("review-queue: a record for %r that is not a review item, skipped", item_id[:64])
                return
            self._items[item_id] = item


@dataclass
class _Session:
    reviewer: str
    csrf: str
    expires: float


class Sessions:
    """Signed-in reviewers, by random cookie token, in memory (a restart signs everyone out)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._by_id: dict[str, _Session] = {}

    def create(self, reviewer: str) -> tuple[str, _Session]:
        now = time.time()
        self._by_id = {k: v for k, v in self._by_id.items() if v.expires > now}
        sid = secrets.token_urlsafe(32)
        session = self._by_id[sid] = _Session(reviewer, secrets.token_urlsafe(32), now + self.ttl_s)
        return sid, session

    def get(self, sid: str | None) -> _Session | None:
        session = self._by_id.get(sid or "")
        if session is None or session.expires <= time.time():
            return None
        return session

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _age(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def make_web_app(settings: Settings, items: PendingItems, producer: Any) -> Any:
    """The aiohttp application: /login, / (the queue), /decide, /logout, /ready and /static/."""
    import jinja2
    from aiohttp import web

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PAGE_DIR), autoescape=True, undefined=jinja2.StrictUndefined
    )
    passwords = {name: secret.get_secret_value() for name, secret in settings.review.reviewers.items()}
    sessions = Sessions(settings.review.session_ttl_s)
    categories = ("none", *CATEGORIES)
    cookie = {"httponly": True, "samesite": "Strict", "path": "/"}

    def render(name: str, status: int = 200, **context: Any) -> web.Response:
        body = env.get_template(name).render(**context)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    @web.middleware
    async def headers(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                raise web.HTTPForbidden(text="cross-origin post refused")
        response = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        # same-origin, not no-referrer: under no-referrer the browser sends `Origin: null` with the page's own posts.
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def session_of(request: web.Request) -> tuple[str | None, _Session | None]:
        sid = request.cookies.get("rs_session")
        return sid, sessions.get(sid)

    async def login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
        csrf = secrets.token_urlsafe(32)
        response = render("login.html", status=status, csrf=csrf, error=error)
        response.set_cookie("rs_login", csrf, max_age=600, **cookie)
        return response

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = str(form.get("csrf", ""))
        if not given or not _same(given, request.cookies.get("rs_login", "")):
            return await login_page(request, "The form expired; sign in again.", 400)
        name, typed = str(form.get("reviewer", "")), str(form.get("password", ""))
        expected = passwords.get(name)
        # Compared even for an unknown name, so the time does not tell which names exist.
        ok = _same(typed, expected if expected is not None else secrets.token_urlsafe(16)) and expected is not None
        if not ok:
            log.warning("review: a failed sign-in")
            return await login_page(request, "Unknown reviewer or wrong password.", 401)
        sid, _ = sessions.create(name)
        response = web.HTTPSeeOther("/")
        response.set_cookie("rs_session", sid, max_age=int(settings.review.session_ttl_s), **cookie)
        response.del_cookie("rs_login", path="/")
        return response

    async def queue(request: web.Request) -> web.StreamResponse:
        _, session = session_of(request)
        if session is None:
            raise web.HTTPSeeOther("/login")
        pending = items.pending()
        shown = [{**i, "top_category": (i["reasons"][0].split(">=")[0] if i.get("reasons") else "none")}
                 for i in pending[:SHOWN]]  # fmt: skip
        notice = {"approve": "Approved.", "remove": "Removed.", "escalate": "Escalated.",
                  "gone": "That item is no longer pending."}.get(request.query.get("done", ""), "")  # fmt: skip
        return render("queue.html", items=shown, reviewer=session.reviewer, csrf=session.csrf,
                      categories=categories, notice=notice, oldest=_age(pending[0]["queued_at"]) if pending else "")  # fmt: skip

    async def decide(request: web.Request) -> web.StreamResponse:
        _, session = session_of(request)
        if session is None:
            raise web.HTTPSeeOther("/login")
        form = await request.post()
        if not _same(str(form.get("csrf", "")), session.csrf):
            raise web.HTTPForbidden(text="bad CSRF token")
        decision, category = str(form.get("decision", "")), str(form.get("category", "none"))
        if decision not in ("approve", "remove", "escalate") or category not in categories:
            raise web.HTTPBadRequest(text="unknown decision or category")
        item = items.get(str(form.get("item_id", "")))
        if item is None:
            raise web.HTTPSeeOther("/?done=gone")
        value = decision_record(item, decision, category, str(form.get("note", ""))[:2000], session.reviewer, time.time())
        producer.produce(settings.topics.review_decisions, value, item["user_id"].encode())
        if producer.flush(10) != 0:
            raise web.HTTPServiceUnavailable(text="the decision was not acknowledged by Kafka; try again")
        items.hide(item["item_id"], item["kind"])
        raise web.HTTPSeeOther(f"/?done={decision}")

    async def logout(request: web.Request) -> web.StreamResponse:
        sid, session = session_of(request)
        form = await request.post()
        if session is not None and _same(str(form.get("csrf", "")), session.csrf):
            sessions.drop(sid)
        response = web.HTTPSeeOther("/login")
        response.del_cookie("rs_session", path="/")
        return response

    async def ready(request: web.Request) -> web.Response:
        if items.error is not None:
            return web.json_response({"ready": False, "error": items.error}, status=503)
        ok = items.ready.is_set()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def login_get(request: web.Request) -> web.Response:
        return await login_page(request)

    app = web.Application(middlewares=[headers], client_max_size=64 * 1024)
    app.router.add_get("/login", login_get)
    app.router.add_post("/login", login)
    app.router.add_get("/", queue)
    app.router.add_post("/decide", decide)
    app.router.add_post("/logout", logout)
    app.router.add_get("/ready", ready)
    for name, kind in (("review.js", "text/javascript"), ("review.css", "text/css")):
        body = (PAGE_DIR / name).read_bytes()
        app.router.add_get(f"/static/{name}", lambda r, b=body, k=kind: web.Response(body=b, content_type=k))
    return app
