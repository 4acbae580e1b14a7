"""Who may see the dashboard: ``server.dashboard_token`` (read-only) or ``server.intake_token``.

A script sends ``Authorization: Bearer <token>``. A browser signs in once (the login form, or
``?token=`` in a link, redirected at once to the same page without it) and then carries a session
cookie: HttpOnly, SameSite=Strict, path ``/dashboard``, holding an expiry and an HMAC of it keyed
by the token, never the token itself. Changing the token in the config (and reloading) ends every
session. A form POST made with the cookie must come from our own pages (its Origin, else its
Referer, names this host): with SameSite=Strict that is enough against cross-site requests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from html import escape
from typing import Final
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from leadrelay.config import Settings
from leadrelay.service.dashboard.forms import FormError, read_form
from leadrelay.service.dashboard.layout import BASE, page

COOKIE: Final = "leadrelay_dashboard"
SESSION_S: Final = 12 * 3600
_LOGIN_FORM_LIMIT: Final = 4096
_SESSION_LABEL: Final = b"leadrelay dashboard session|"

Handler = Callable[[Request], Awaitable[Response]]


def _tokens(request: Request) -> list[bytes]:
    settings: Settings = request.app.state.settings
    server = settings.server
    return [
        t.get_secret_value().encode()
        for t in (server.dashboard_token, server.intake_token)
        if t is not None
    ]


def _mac(token: bytes, expires: int) -> str:
    return hmac.new(token, _SESSION_LABEL + str(expires).encode(), hashlib.sha256).hexdigest()


def _token_ok(request: Request, given: str) -> bool:
    raw = given.strip().encode()
    # Compare with every token (no early exit): the time taken says nothing about which matched.
    return bool(sum(hmac.compare_digest(raw, t) for t in _tokens(request)))


def _session_ok(request: Request, cookie: str | None, now: float) -> bool:
    if not cookie:
        return False
    version, _, rest = cookie.partition(".")
    expires, _, mac = rest.partition(".")
    if version != "v1" or not expires.isdigit() or int(expires) < now:
        return False
    return bool(sum(hmac.compare_digest(mac, _mac(t, int(expires))) for t in _tokens(request)))


def _bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
    return given if scheme.lower() == "bearer" and given.strip() else None


def _same_origin(request: Request, *, required: bool) -> bool:
    """Whether a POST comes from our own pages; without Origin and Referer, ``not required``."""
    origin = request.headers.get("origin")
    if origin is None:
        origin = request.headers.get("referer")
    if origin is None:
        return not required
    host = request.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def _safe_next(target: str | None) -> str:
    # Only our own pages: never an absolute URL or a scheme-relative one (open redirect).
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return BASE
    if target == BASE or target.startswith((f"{BASE}/", f"{BASE}?")):
        return target
    return BASE


def _start_session(request: Request, response: Response, token: str, now: float) -> Response:
    expires = int(now) + SESSION_S
    match = next(t for t in _tokens(request) if hmac.compare_digest(token.strip().encode(), t))
    https = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    response.set_cookie(
        COOKIE,
        f"v1.{expires}.{_mac(match, expires)}",
        max_age=SESSION_S,
        path=BASE,
        secure=https,
        httponly=True,
        samesite="strict",
    )
    return response


def login_page(request: Request, *, status: int, message: str | None = None) -> Response:
    """The sign-in form (also the 401 page), returning to the page asked for."""
    target = request.url.path
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    if query:
        target += "?" + urlencode(query)
    if target.startswith((f"{BASE}/login", f"{BASE}/logout")):
        target = request.query_params.get("next") or BASE
    problem = f'<p class="problem" role="alert">{escape(message)}</p>' if message else ""
    body = (
        '<div class="login"><h1>Sign in to the dashboard</h1>'
        "<p>Use the dashboard token (<code>server.dashboard_token</code>, read-only) or the "
        "intake token (<code>server.intake_token</code>) from the leadrelay config.</p>"
        f'{problem}<form method="post" action="{BASE}/login">'
        '<label for="token">Token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        'required autofocus spellcheck="false">'
        f'<input type="hidden" name="next" value="{escape(_safe_next(target))}">'
        '<p><button type="submit">Sign in</button></p></form></div>'
    )
    headers = {"WWW-Authenticate": 'Bearer realm="leadrelay dashboard"'} if status == 401 else None
    return page("Sign in", body, current=None, status=status, signed_in=False, headers=headers)


class DashboardAuth:
    """Sign-in, sign-out and the guard every dashboard page goes through."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def signed_in(self, request: Request) -> bool:
        """A valid bearer token or session cookie."""
        bearer = _bearer(request)
        if bearer is not None:
            return _token_ok(request, bearer)
        return _session_ok(request, request.cookies.get(COOKIE), self._clock())

    def guard(self, handler: Handler) -> Handler:
        """``handler`` for signed-in requests; the sign-in page (401) or 403 otherwise."""

        async def guarded(request: Request) -> Response:
            given = request.query_params.get("token")
            if given is not None:
                return self._token_link(request, given)
            if not self.signed_in(request):
                return login_page(request, status=401)
            cookie_post = request.method == "POST" and _bearer(request) is None
            if cookie_post and not _same_origin(request, required=True):
                return _forbidden()
            return await handler(request)

        return guarded

    def _token_link(self, request: Request, given: str) -> Response:
        """``?token=``: start a session and send the browser to the same page without it, so
        the token does not stay in its history."""
        if not _token_ok(request, given):
            return login_page(request, status=401, message="That token is not right.")
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + ("?" + urlencode(query) if query else "")
        return _start_session(
            request, RedirectResponse(_safe_next(target), 303), given, self._clock()
        )

    async def login(self, request: Request) -> Response:
        """``GET|POST /dashboard/login``."""
        if request.method == "GET":
            if self.signed_in(request):
                return RedirectResponse(_safe_next(request.query_params.get("next")), 303)
            return login_page(request, status=200)
        if not _same_origin(request, required=False):
            return _forbidden()
        try:
            form = await read_form(request, _LOGIN_FORM_LIMIT)
        except FormError as exc:
            return login_page(request, status=400, message=str(exc))
        token = form.get("token", "")
        if not token or not _token_ok(request, token):
            return login_page(request, status=401, message="That token is not right.")
        response = RedirectResponse(_safe_next(form.get("next")), 303)
        return _start_session(request, response, token, self._clock())

    async def logout(self, request: Request) -> Response:
        """``POST /dashboard/logout``: forget the session cookie."""
        if not _same_origin(request, required=False):
            return _forbidden()
        response = RedirectResponse(f"{BASE}/login", 303)
        response.delete_cookie(COOKIE, path=BASE, httponly=True, samesite="strict")
        return response


def _forbidden() -> Response:
    body = (
        "<h1>Not allowed</h1><p>This form was sent from another site. Open the dashboard "
        f'and send it from there: <a href="{BASE}">Event Delivery</a>.</p>'
    )
    return page("Not allowed", body, current=None, status=403, signed_in=False)
