"""The dashboard's HTTP application: sign-in, pages, and the headers that keep a browser safe.

Read-only by design: people sign in with their sealml user name, password and (when they
enrolled one) TOTP code, and see what their roles let them read through the CLI: models,
versions, gates, model cards, incidents, the ledger and its verification. Changes (promote,
approve, freeze) stay with the CLI, where they are signed by the person's own key.

A small pool of workspace objects (one per request at a time, each with its own database
connections, all unlocked with the same keys) serves the requests, each acting as the
request's principal while it runs, so a slow page does not hold up the others; the
principal is read again on every request, so disabling a user or changing their roles
takes effect at once.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.templating import Jinja2Templates

from ..access.principals import Actor
from ..crypto.secret import Secret
from ..errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    SealmlError,
)
from ..ledger import EventFilter
from ..serving.limits import MemoryLimiter
from . import views
from .sessions import BrowserSession, BrowserSessions

if TYPE_CHECKING:
    from ..workspace import Workspace

MAX_FORM_BYTES = 8192
MAX_FIELD = {"user": 128, "password": 1024, "code": 16, "csrf": 128}
MAX_FILTER = 200
_ARTIFACT_ID = re.compile(r"[0-9a-f]{32}")
# Sign-in attempts: a burst of 5 per user name and per client, then one every 30 s.
LOGIN_BURST, LOGIN_RATE = 5, 1 / 30

_PAGE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Model cards and drift pages are whole pages with their own inline style and embedded
# plots: shown in a sandbox (no scripts, no forms, an opaque origin), nothing else allowed.
_CARD_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True)
class UiSettings:
    """How the dashboard runs."""

    secure: bool  # served over TLS: cookies are Secure and __Host- prefixed, HSTS is sent
    allowed_hosts: tuple[str, ...]
    idle_minutes: int = 15
    lifetime_minutes: int = 480
    workers: int = 4  # requests served at once (one workspace object each)

    @property
    def session_cookie(self) -> str:
        return "__Host-sealml-session" if self.secure else "sealml-session"

    @property
    def login_cookie(self) -> str:
        return "__Host-sealml-login" if self.secure else "sealml-login"


class Dashboard:
    """The state behind the app: the workspace, browser sessions, sign-in limits."""

    def __init__(self, workspace: Workspace, settings: UiSettings) -> None:
        self.workspace = workspace
        self.settings = settings
        self.sessions = BrowserSessions(settings.idle_minutes * 60, settings.lifetime_minutes * 60)
        self.limiter = MemoryLimiter()
        self._idle: queue.LifoQueue[Workspace] = queue.LifoQueue()
        self._idle.put(workspace)
        self._siblings: list[Workspace] = []
        self._pool_lock = threading.Lock()

    @contextlib.contextmanager
    def _borrowed(self) -> Iterator[Workspace]:
        """A workspace object no other request is using (a new one while the pool is
        below its size, else the next to come back), acting as nobody."""
        with self._pool_lock:
            try:
                workspace: Workspace | None = self._idle.get_nowait()
            except queue.Empty:
                workspace = None
                if len(self._siblings) + 1 < self.settings.workers:
                    workspace = self.workspace.sibling()
                    self._siblings.append(workspace)
        if workspace is None:
            workspace = self._idle.get()
        try:
            yield workspace
        finally:
            workspace.actor = None
            self._idle.put(workspace)

    def close(self) -> None:
        """Close the workspace objects the pool opened (not the one it was given)."""
        with self._pool_lock:
            for sibling in self._siblings:
                sibling.close()
            self._siblings.clear()

    @contextlib.contextmanager
    def acting_as(self, browser: BrowserSession) -> Iterator[Workspace]:
        """A workspace acting as the browser's principal, as it is now (roles, and the
        approved policy that grants them, may have changed since sign-in; a disabled
        principal's sessions end)."""
        with self._borrowed() as workspace:
            workspace.reload_policy()
            with workspace.db.read() as session:
                current = workspace.principals.get(session, browser.actor.name)
            if current.disabled:
                self.sessions.end_for(current.name)
                raise AuthenticationError(f"{current.name} is disabled")
            if current.password_stamp != browser.actor.principal.password_stamp:
                self.sessions.end_for(current.name, unless_stamp=current.password_stamp)
                raise AuthenticationError(f"the password of {current.name} changed; sign in again")
            workspace.actor = replace(browser.actor, principal=current)
            yield workspace

    def sign_in(self, name: str, password: Secret, code: str) -> Actor:
        """Password, then TOTP when the principal enrolled one; both outcomes are audited."""
        with self._borrowed() as workspace:
            actor = workspace.login(name, password)
            if workspace.totp_enrolled():
                workspace.totp_check(code)
            if actor.principal.password_reset_by is not None:
                resource = f"principal:{actor.name}"
                workspace.record(
                    [workspace.event("ui.sign-in", resource, "denied", reason="password reset")]
                )
                raise PermissionDeniedError(
                    "An administrator reset your password: change it with `sealml user "
                    "passwd` before you sign in here."
                )
            workspace.record(
                [workspace.event("ui.sign-in", f"principal:{actor.name}", via="dashboard")]
            )
            return actor

    def sign_out(self, browser: BrowserSession) -> None:
        with self.acting_as(browser) as workspace:
            resource = f"principal:{browser.actor.name}"
            workspace.record([workspace.event("ui.sign-out", resource, via="dashboard")])


def _templates() -> Jinja2Templates:
    loader = jinja2.PackageLoader("sealml.ui", "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    return Jinja2Templates(env=env)


def _status(error: SealmlError) -> int:
    if isinstance(error, AuthenticationError):
        return 401
    if isinstance(error, PermissionDeniedError):
        return 403
    if isinstance(error, NotFoundError):
        return 404
    return 409 if error.exit_code == 1 else 400


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form: one value per field, each within its bound."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=8, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form is malformed") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        limit = MAX_FIELD.get(key)
        if limit is None or key in form or len(value) > limit:
            raise HTTPException(400, "the form is malformed")
        form[key] = value
    return form


def _filter(request: Request) -> EventFilter:
    query = request.query_params
    given: dict[str, Any] = {}
    for key in ("principal", "action", "resource", "outcome"):
        value = query.get(key, "").strip()
        if len(value) > MAX_FILTER:
            raise HTTPException(400, f"the {key} filter is too long")
        given[key] = value or None
    before = query.get("before", "").strip()
    if before:
        if not before.isdigit() or len(before) > 18:
            raise HTTPException(400, "before takes an event number")
        given["before_seq"] = int(before)
    return EventFilter(**given)


def create_dashboard(workspace: Workspace, settings: UiSettings) -> FastAPI:
    """The dashboard app over an open (and, for model cards, unlocked) workspace."""
    dashboard = Dashboard(workspace, settings)
    templates = _templates()
    stylesheet = resources.files("sealml.ui").joinpath("static/dashboard.css").read_bytes()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        dashboard.close()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.dashboard = dashboard
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response: Response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("content-security-policy", _PAGE_POLICY)
        if settings.secure:
            response.headers.setdefault("strict-transport-security", "max-age=31536000")
        return response

    def render(
        request: Request,
        template: str,
        context: dict[str, Any],
        status: int = 200,
        browser: BrowserSession | None = None,
    ) -> Response:
        base = {
            "nav": None,
            "me": browser.actor.principal if browser else None,
            "csrf": browser.csrf if browser else "",
            "workspace_name": workspace.config.workspace.name,
        }
        return templates.TemplateResponse(request, template, base | context, status_code=status)

    def failure(request: Request, status: int, message: str) -> Response:
        browser = dashboard.sessions.get(request.cookies.get(settings.session_cookie))
        return render(request, "error.html", {"message": message}, status, browser)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 303 and error.headers:
            return RedirectResponse(error.headers["location"], 303)
        return failure(request, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> Response:
        return failure(request, 400, "the address is malformed")

    @app.exception_handler(SealmlError)
    async def refused(request: Request, error: SealmlError) -> Response:
        return failure(request, _status(error), str(error).splitlines()[0])

    def signed_in(request: Request) -> BrowserSession:
        browser = dashboard.sessions.get(request.cookies.get(settings.session_cookie))
        if browser is None:
            raise HTTPException(303, headers={"location": "/login"})
        return browser

    def page(
        request: Request, template: str, view: Callable[[Workspace], dict[str, Any]]
    ) -> Response:
        browser = signed_in(request)
        with dashboard.acting_as(browser) as acting:
            context = view(acting)
            nav = views.Rights.of(acting)
        return render(request, template, {**context, "nav": nav}, browser=browser)

    @app.get("/static/dashboard.css", include_in_schema=False)
    def css() -> Response:
        return Response(stylesheet, media_type="text/css")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        if dashboard.sessions.get(request.cookies.get(settings.session_cookie)):
            return RedirectResponse("/", 303)
        return _login_page(request, None, 200)

    def _login_page(request: Request, message: str | None, status: int) -> Response:
        nonce = os.urandom(16).hex()
        response = render(
            request,
            "login.html",
            {"message": message, "login_csrf": dashboard.sessions.csrf_token(nonce)},
            status,
        )
        response.set_cookie(
            settings.login_cookie, nonce, httponly=True, secure=settings.secure,
            samesite="strict", path="/",
        )  # fmt: skip
        return response

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await _form(request)
        if not dashboard.sessions.csrf_ok(request.cookies.get(settings.login_cookie),
                                          form.get("csrf")):  # fmt: skip
            return _login_page(request, "The sign-in form expired; try again.", 403)
        name = form.get("user", "").strip()
        client = request.client.host if request.client else "-"
        waits = [
            await dashboard.limiter.take(f"user:{name}", LOGIN_RATE, LOGIN_BURST),
            await dashboard.limiter.take(f"client:{client}", LOGIN_RATE, LOGIN_BURST),
        ]
        if max(waits) > 0:
            response = _login_page(request, "Too many attempts; wait and try again.", 429)
            response.headers["retry-after"] = str(int(max(waits)) + 1)
            return response
        try:
            actor = await run_in_threadpool(
                dashboard.sign_in, name, Secret(form.get("password", "")), form.get("code", "")
            )
        except AuthenticationError:
            message = "Wrong user name, password or one-time code."
            return _login_page(request, message, 401)
        except PermissionDeniedError as refused:  # right credentials, not usable yet
            return _login_page(request, str(refused), 403)
        dashboard.sessions.end(request.cookies.get(settings.session_cookie))  # one per browser
        response = RedirectResponse("/", 303)
        response.set_cookie(
            settings.session_cookie, dashboard.sessions.start(actor), httponly=True,
            secure=settings.secure, samesite="strict", path="/",
        )  # fmt: skip
        response.delete_cookie(settings.login_cookie, path="/")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await _form(request)
        token = request.cookies.get(settings.session_cookie)
        browser = dashboard.sessions.get(token)
        if browser is not None and dashboard.sessions.csrf_ok(token, form.get("csrf")):
            dashboard.sessions.end(token)
            with contextlib.suppress(SealmlError):  # a disabled user is signed out anyway
                await run_in_threadpool(dashboard.sign_out, browser)
        elif browser is not None:
            raise HTTPException(403, "the sign-out form expired; reload the page")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(settings.session_cookie, path="/")
        return response

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        return page(request, "overview.html", views.overview)

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str) -> Response:
        return page(request, "model.html", lambda w: views.model(w, name))

    @app.get("/models/{name}/{version}/card", response_class=HTMLResponse)
    def card(request: Request, name: str, version: int) -> Response:
        browser = signed_in(request)
        with dashboard.acting_as(browser) as acting:
            text = views.card(acting, name, version)
        return HTMLResponse(text, headers={"content-security-policy": _CARD_POLICY})

    @app.get("/models/{name}/{version}/provenance", response_class=HTMLResponse)
    def provenance(request: Request, name: str, version: int) -> Response:
        return page(request, "provenance.html", lambda w: views.provenance(w, name, version))

    @app.get("/logs/{artifact_id}", response_class=HTMLResponse)
    def stage_log(request: Request, artifact_id: str) -> Response:
        if not _ARTIFACT_ID.fullmatch(artifact_id):
            raise HTTPException(400, "an artifact id is 32 hexadecimal digits")
        return page(request, "log.html", lambda w: views.stage_log(w, artifact_id))

    @app.get("/drift/{artifact_id}", response_class=HTMLResponse)
    def drift(request: Request, artifact_id: str) -> Response:
        if not _ARTIFACT_ID.fullmatch(artifact_id):
            raise HTTPException(400, "an artifact id is 32 hexadecimal digits")
        browser = signed_in(request)
        with dashboard.acting_as(browser) as acting:
            text = views.drift_page(acting, artifact_id)
        return HTMLResponse(text, headers={"content-security-policy": _CARD_POLICY})

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request) -> Response:
        where = _filter(request)
        return page(request, "audit.html", lambda w: views.audit(w, where))

    @app.get("/audit/verify", response_class=HTMLResponse)
    def verify(request: Request) -> Response:
        return page(request, "verify.html", lambda w: {"report": views.verification(w)})

    @app.get("/people", response_class=HTMLResponse)
    def people(request: Request) -> Response:
        return page(request, "people.html", views.people)

    @app.get("/incidents", response_class=HTMLResponse)
    def incidents(request: Request) -> Response:
        return page(request, "incidents.html", lambda w: {"incidents": views.incidents(w)})

    return app
