"""The console's routes (registered in the gateway's ROUTE_MODULES, before the catch-all).

    GET  /console                              overview: every function over a window, charts
    GET  /console/functions/{name}             one function
    GET  /console/invocations/{id}             one invocation: row, attempts, logs, payload, result
    GET  /console/nodes                        every node
    GET  /console/live/...                     the same pages' live parts, as HTML fragments
    GET  /console/series                       ?window= &function=: the charts' data (JSON)
    POST /console/functions/{name}/dlq/redrive a form: csrf, id (absent: every dead letter)
    GET  /console/login, POST /console/login   the sign-in form (public), POST /console/logout
    GET  /console/static/{asset}               the console's own CSS, script and chart library (public)

Pages take ?window=15m|1h|24h|7d (default 1h); a function page also ?status=. No page
loads anything from another site (see SECURITY_HEADERS' content security policy).
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from stoker.errors import InvalidInput, PlatformUnavailable
from stoker.platform.deadletters import redrive
from stoker.platform.gateway.console import gather
from stoker.platform.gateway.console.guard import (
    COOKIE,
    action,
    current_session,
    data,
    form_of,
    page,
    public,
    read_form,
    safe_next,
    sessions,
    wants_html,
)
from stoker.platform.gateway.console.render import SECURITY_HEADERS, assets, render
from stoker.platform.gateway.console.sessions import COOKIE_PATH, LOGIN_COOKIE, Session
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import gateway
from stoker.platform.ledger import stats
from stoker.platform.ledger.records import STATUSES
from stoker.platform.tokens.store import token_hash

LOGIN_PATH = "/console/login"


def _window(request: Request) -> stats.Window:
    return stats.window(request.query_params.get("window"))


def _status(request: Request) -> str | None:
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status {status!r} is not a status: use one of {', '.join(STATUSES)}")
    return status


def _page(template: str, session: Session, active: str, context: dict[str, Any]) -> Response:
    return render(template, {"session": session, "active": active, **context})


# -- pages and their live parts ---------------------------------------------------------

async def overview(request: Request, session: Session) -> Response:
    win = _window(request)
    return _page("overview.html", session, "overview", await gather.overview(gateway(request), win))


async def overview_live(request: Request, session: Session) -> Response:
    win = _window(request)
    return _page("partials/overview.html", session, "overview", await gather.overview(gateway(request), win))


async def function(request: Request, session: Session) -> Response:
    name, win, status = request.path_params["name"], _window(request), _status(request)
    found = await gather.function_page(gateway(request), name, win, status)
    return _page("function.html", session, "overview", found)


async def function_live(request: Request, session: Session) -> Response:
    name, win, status = request.path_params["name"], _window(request), _status(request)
    found = await gather.function_page(gateway(request), name, win, status)
    return _page("partials/function.html", session, "overview", found)


async def invocation(request: Request, session: Session) -> Response:
    found = await gather.invocation_page(gateway(request), request.path_params["id"])
    return _page("invocation.html", session, "overview", found)


async def invocation_live(request: Request, session: Session) -> Response:
    found = await gather.invocation_page(gateway(request), request.path_params["id"])
    return _page("partials/invocation.html", session, "overview", found)


async def nodes(request: Request, session: Session) -> Response:
    return _page("nodes.html", session, "nodes", await gather.nodes_page(gateway(request)))


async def nodes_live(request: Request, session: Session) -> Response:
    return _page("partials/nodes.html", session, "nodes", await gather.nodes_page(gateway(request)))


async def series(request: Request, session: Session) -> Response:
    unknown = sorted(set(request.query_params) - {"window", "function"})
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}: use window and function")
    g = gateway(request)
    function = request.query_params.get("function") or None
    if function is not None:
        await g.ctx.directory.require(function)
    return json_response(await gather.chart(g, _window(request), function))


# -- acting -----------------------------------------------------------------------------

async def redrive_dead_letters(request: Request, session: Session) -> Response:
    name = request.path_params["name"]
    invocation_id = form_of(request).get("id") or None
    moved = await redrive(gateway(request).ctx, name, invocation_id)
    if wants_html(request):  # a plain form post (no script): back to the page
        return RedirectResponse(f"/console/functions/{name}?redriven={len(moved)}", status_code=303)
    return json_response({"redriven": moved, "count": len(moved)})


# -- signing in and out -------------------------------------------------------------------

def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_form(request: Request, next_path: str, error: str | None, status: int) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = render("login.html", {"session": None, "active": "", "next": next_path, "nonce": nonce,
                                     "error": error}, status=status)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, path=LOGIN_PATH, httponly=True, samesite="strict",
                        secure=_secure(request))
    return response


async def login_form(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if await current_session(request) is not None:
        return RedirectResponse(next_path, status_code=303, headers=SECURITY_HEADERS)
    return _login_form(request, next_path, None, 200)


async def login(request: Request) -> Response:
    g = gateway(request)
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(nonce.encode(), form.get("nonce", "").encode()):
        return _login_form(request, next_path, "The sign-in form expired or did not come from this console: "
                                               "enter the token again.", 403)
    token = form.get("token", "").strip()
    if not token:
        return _login_form(request, next_path, "Enter a token: the admin token is in "
                                               "$STOKER_HOME/endpoint.json; `stoker token create` makes others.", 400)
    try:
        principal = await g.tokens.verify(token)
    except (RedisError, OSError) as e:
        raise PlatformUnavailable(f"cannot check the token: Redis is not reachable ({e})") from None
    if principal is None:
        return _login_form(request, next_path, "That token is not valid (unknown or revoked): check it, or see "
                                               "`stoker token list`.", 401)
    if not principal.may("read"):
        return _login_form(request, next_path, f"The token {principal.name!r} does not have the read right the "
                                               "console needs: sign in with one that has.", 403)
    store = sessions(g)
    await store.close(request.cookies.get(COOKIE))
    session_id, _ = await store.open(token_hash(token), principal.name, principal.rights)
    response = RedirectResponse(next_path, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(COOKIE, session_id, path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(request))
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


async def logout(request: Request, session: Session) -> Response:
    await sessions(gateway(request)).close(request.cookies.get(COOKIE))
    response: Response = (RedirectResponse(LOGIN_PATH, status_code=303) if wants_html(request)
                          else json_response({"signed_out": True}))
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(request))
    return response


# -- static files -------------------------------------------------------------------------

async def static_file(request: Request) -> Response:
    asset = assets().get(request.path_params["asset"])
    if asset is None:
        return json_response({"error": f"no console file {request.path_params['asset']!r}", "code": "404"},
                             status=404)
    etag = f'"{asset.version}"'
    fresh = request.query_params.get("v") == asset.version
    headers = {"etag": etag, "x-content-type-options": "nosniff",
               "cache-control": "public, max-age=31536000, immutable" if fresh else "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


routes = [
    public(LOGIN_PATH, login_form),
    public(LOGIN_PATH, login, methods=("POST",)),
    public("/console/static/{asset:path}", static_file),
    action("/console/logout", logout, right="read"),
    page("/console", overview),
    page("/console/functions/{name}", function),
    page("/console/invocations/{id}", invocation),
    page("/console/nodes", nodes),
    data("/console/live/overview", overview_live),
    data("/console/live/functions/{name}", function_live),
    data("/console/live/invocations/{id}", invocation_live),
    data("/console/live/nodes", nodes_live),
    data("/console/series", series),
    action("/console/functions/{name}/dlq/redrive", redrive_dead_letters, right="invoke"),
]
