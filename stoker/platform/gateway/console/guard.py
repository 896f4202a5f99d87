"""Who may see the console: every console route is built here, signed-in unless said public.

    page(path, view)       GET, HTML: a browser without a session is sent to the sign-in
                           form (303); anything else gets 401 JSON. Errors render as pages.
    data(path, view)       GET, what the pages poll (HTML fragments, chart JSON): 401 JSON
                           without a session (the page's script then goes to the sign-in form).
    action(path, view)     POST, state-changing: a session, its right, and the session's
                           anti-forgery token (the `X-CSRF-Token` header or a `csrf` form
                           field); SameSite=Lax already keeps other sites' forms cookie-less.
    public(path, view)     the sign-in form and the static files only.

Bearer tokens are not read here: they are for the management API under /api/.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from stoker.errors import Forbidden, InvalidInput, PlatformUnavailable, StokerError, Unauthorized
from stoker.platform.gateway.console.render import SECURITY_HEADERS, render
from stoker.platform.gateway.console.sessions import COOKIE, Session, SessionSettings, SessionStore
from stoker.platform.gateway.httputil import json_response, parse_json, read_body
from stoker.platform.gateway.state import GatewayState, gateway

View = Callable[[Request, Session], Awaitable[Response]]
PublicView = Callable[[Request], Awaitable[Response]]

SIGNED_OUT = "sign in to the console first (POST /console/login with a token); the API under /api/ takes a bearer token"
CSRF_HEADER = "x-csrf-token"
MAX_FORM = 64 * 1024


def sessions(g: GatewayState) -> SessionStore:
    store = g.extras.get("console.sessions")
    if store is None:
        store = g.extras["console.sessions"] = SessionStore(g.ctx.redis, g.ctx.keys, SessionSettings.from_env())
    return store


async def current_session(request: Request) -> Session | None:
    """The request's live session: its cookie names one, and the token it was opened with is still valid."""
    g = gateway(request)
    store = sessions(g)
    session_id = request.cookies.get(COOKIE)
    try:
        session = await store.load(session_id)
        if session is None:
            return None
        principal = await g.tokens.verify_hash(session.token_hash)
        if principal is None:  # revoked since: the session ends with it
            await store.close(session_id)
            return None
    except (RedisError, OSError) as e:
        raise PlatformUnavailable(f"cannot check the console session: Redis is not reachable ({e})") from None
    return session


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path of this site, never another site."""
    if not value:
        return "/console"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console"
    return value


def sign_in_redirect(request: Request, come_back: bool = True) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = "" if target == "/console" or not come_back else "?" + urllib.parse.urlencode({"next": target})
    return RedirectResponse("/console/login" + query, status_code=303, headers=SECURITY_HEADERS)


def error_json(error: StokerError) -> Response:
    return json_response(error.to_json(), status=error.status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, error: StokerError, session: Session | None) -> Response:
    return render("error.html", {"session": session, "error": error.message, "status": error.status_code,
                                 "active": ""}, status=error.status_code)


def refuse(request: Request, error: StokerError, session: Session | None) -> Response:
    """An error as a page for a browser's navigation or form post, else as JSON (scripts, API clients)."""
    if not wants_html(request):
        return error_json(error)
    if isinstance(error, Unauthorized):  # to the sign-in form; back here after it, if this can be gone back to
        return sign_in_redirect(request, come_back=request.method == "GET")
    return error_page(request, error, session)


def _refused(session: Session | None, right: str) -> StokerError | None:
    if session is None:
        return Unauthorized(SIGNED_OUT)
    if not session.may(right):
        return Forbidden(f"the token {session.name!r} does not have the right {right!r}: sign in with one that has")
    return None


def _guarded(view: View, right: str, check_csrf: bool, pages: bool) -> PublicView:
    async def endpoint(request: Request) -> Response:
        session = await current_session(request)
        refused = _refused(session, right)
        if refused is not None:
            return refuse(request, refused, session) if pages else error_json(refused)
        assert session is not None
        try:
            if check_csrf:
                form = await read_form(request)
                if not session.csrf_matches(request.headers.get(CSRF_HEADER) or form.get("csrf")):
                    raise Forbidden("this request did not come from a console page (the anti-forgery token is "
                                    "missing or wrong): reload the page and try again")
                request.scope[FORM_KEY] = form
            response = await view(request, session)
        except StokerError as e:
            return refuse(request, e, session) if pages else error_json(e)
        response.headers.update({**SECURITY_HEADERS, "cache-control": "no-store"})
        return response

    return endpoint


def page(path: str, view: View, right: str = "read") -> Route:
    return Route(path, _guarded(view, right, check_csrf=False, pages=True), methods=["GET"],
                 name=f"console:{view.__name__}")


def data(path: str, view: View, right: str = "read") -> Route:
    return Route(path, _guarded(view, right, check_csrf=False, pages=False), methods=["GET"],
                 name=f"console:{view.__name__}")


def action(path: str, view: View, right: str) -> Route:
    return Route(path, _guarded(view, right, check_csrf=True, pages=True), methods=["POST"],
                 name=f"console:{view.__name__}")


def public(path: str, view: PublicView, methods: tuple[str, ...] = ("GET",)) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            return await view(request)
        except StokerError as e:
            return refuse(request, e, None)

    return Route(path, endpoint, methods=list(methods), name=f"console:{view.__name__}")


FORM_KEY = "console.form"


def form_of(request: Request) -> dict[str, str]:
    """The form an action was posted with (read and checked before the view runs)."""
    form: dict[str, str] = request.scope.get(FORM_KEY, {})
    return form


async def read_form(request: Request) -> dict[str, str]:
    """A small form or JSON object body as text fields (the views read theirs from here)."""
    body = await read_body(request, MAX_FORM, "form")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body.strip():
        return {}
    if kind == "application/json":
        value = parse_json(body)
        if not isinstance(value, dict):
            raise InvalidInput("the body must be a JSON object")
        return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items() if v is not None}
    if kind in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                                           max_num_fields=100)
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidInput(f"the form could not be read: {e}") from None
        return dict(pairs)
    raise InvalidInput(f"a {kind} body is not accepted here: send a form (application/x-www-form-urlencoded) "
                       "or a JSON object")
