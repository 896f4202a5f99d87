"""What each console page shows, gathered from the platform's own modules.

Nothing is computed here that a platform module already knows: figures and series come
from the ledger (`ledger.stats`), cost from the bill (`ledger.billing`), functions from the
registry, nodes from `platform.nodes`, dead letters from `platform.deadletters`, cron
schedules from `triggers.cron.listing`, queue depths from the queue store, an invocation
from the same code as `GET /api/invocations/{id}`.

Ledger aggregates are cached per gateway for a few seconds (longer for long windows), so
any number of open consoles polling cost the database one query per period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from stoker.errors import NotFound
from stoker.platform.deadletters import list_dead_letters
from stoker.platform.gateway.prometheus import take_snapshot
from stoker.platform.gateway.routes.invocations import invocation_detail
from stoker.platform.gateway.state import GatewayState
from stoker.platform.ledger import stats
from stoker.platform.ledger.billing import Prices, usage
from stoker.platform.ledger.queries import InvocationFilter, list_invocations
from stoker.platform.ledger.records import FINAL_STATUSES, STATUSES
from stoker.platform.nodes import read_nodes
from stoker.platform.registry.store import FunctionState

#: seconds a window's aggregates are reused: about a tenth of a point of its charts
CACHE_SECONDS = {"15m": 3.0, "1h": 5.0, "24h": 30.0, "7d": 120.0}
#: seconds the list of functions is reused (a deploy shows within this)
STATES_SECONDS = 2.0
RECENT = 25
DEAD_LETTERS_SHOWN = 100


@dataclass
class TtlCache:
    """Values computed at most once per period, whoever asks (concurrent askers share one computation)."""

    entries: dict[Any, tuple[float, Any]] = field(default_factory=dict)
    locks: dict[Any, asyncio.Lock] = field(default_factory=dict)

    async def get(self, key: Any, ttl: float, compute: Callable[[], Awaitable[Any]]) -> Any:
        hit = self.entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self.entries.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            value = await compute()
            if len(self.entries) > 1000:  # stale keys of functions and windows no longer viewed
                now = time.monotonic()
                self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
                self.locks = {k: v for k, v in self.locks.items() if k in self.entries or k == key}
            self.entries[key] = (time.monotonic() + ttl, value)
            return value


def _cache(g: GatewayState) -> TtlCache:
    cache = g.extras.get("console.cache")
    if cache is None:
        cache = g.extras["console.cache"] = TtlCache()
    return cache


def _period(win: stats.Window) -> tuple[dt.datetime, dt.datetime]:
    until = dt.datetime.now(dt.UTC)
    return until - win.length, until


# -- ledger aggregates --------------------------------------------------------------------

async def figures(g: GatewayState, win: stats.Window, function: str | None = None) -> dict[str, dict[str, Any]]:
    """Per function over the window: the ledger's figures and the cost at list price (no free tier)."""
    engine = g.ctx.engine
    if engine is None:
        return {}

    async def compute() -> dict[str, dict[str, Any]]:
        since, until = _period(win)
        found = await asyncio.to_thread(stats.by_function, engine, since, until, function)
        used = await asyncio.to_thread(usage, engine, since, until, "function")
        prices = Prices.from_env()
        out = {name: f.to_json() for name, f in found.items()}
        for (_month, name), u in used.items():
            if function is not None and name != function:
                continue
            row = out.setdefault(name, stats.Figures().to_json())
            row["cost"] = row.get("cost", 0.0) + prices.cost(u.requests, u.gb_seconds)
            row["gb_seconds"] = row.get("gb_seconds", 0.0) + u.gb_seconds
        return out

    result: dict[str, dict[str, Any]] = await _cache(g).get(("figures", win.name, function),
                                                            CACHE_SECONDS[win.name], compute)
    return result


async def chart(g: GatewayState, win: stats.Window, function: str | None = None) -> dict[str, Any]:
    """The time series the charts draw: invocations, errors, throttles, cold starts, p50 and p99."""
    engine = g.ctx.engine

    async def compute() -> dict[str, Any]:
        since, until = _period(win)
        if engine is None:
            return {"window": win.name, "step": win.step, "t": []}
        found = await asyncio.to_thread(stats.series, engine, since, until, win.step, function)
        return {"window": win.name, "function": function, **found.to_json()}

    result: dict[str, Any] = await _cache(g).get(("series", win.name, function), CACHE_SECONDS[win.name], compute)
    return result


# -- the overview -------------------------------------------------------------------------

def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {k: sum(r["figures"].get(k) or 0 for r in rows)
                             for k in ("invocations", "finished", "errors", "throttles", "cold_starts", "cost")}
    total["error_rate"] = total["errors"] / total["finished"] if total["finished"] else None
    return total


async def overview(g: GatewayState, win: stats.Window) -> dict[str, Any]:
    ctx = g.ctx
    registry = ctx.require_registry()
    states: list[FunctionState] = await _cache(g).get(("states",), STATES_SECONDS,
                                                      lambda: asyncio.to_thread(registry.states))
    by_name = await figures(g, win)
    pipe = ctx.redis.pipeline(transaction=False)
    for state in states:
        pipe.xlen(ctx.keys.dlq(state.name))
    pipe.hgetall(ctx.keys.concurrency)
    *dlq, running = await pipe.execute()
    running = {k.decode(): int(v) for k, v in running.items()}
    rows = []
    for state, dead in zip(states, dlq, strict=True):
        spec = state.versions[state.latest].spec
        rows.append({
            "name": state.name, "version": state.latest, "runtime": spec.runtime, "memory": spec.memory,
            "description": spec.description, "triggers": sorted({t["type"] for t in spec.triggers}),
            "aliases": sorted(state.aliases), "figures": by_name.get(state.name) or stats.Figures().to_json(),
            "dead_letters": int(dead), "running": max(0, running.get(state.name, 0)),
        })
    snapshot = await take_snapshot(ctx.redis, ctx.keys, ctx.settings.node_dead_after)
    return {
        "window": win.name, "functions": rows, "totals": _totals(rows), "ledger": ctx.engine is not None,
        "platform": {"nodes": snapshot.nodes, "slots": snapshot.slots, "busy": snapshot.busy,
                     "depth": snapshot.depth, "age": snapshot.age},
    }


# -- one function -------------------------------------------------------------------------

def _mask_url(url: Any) -> str:
    try:
        return str(make_url(str(url)).render_as_string(hide_password=True))
    except Exception:
        return "(not shown)"


def _details(trigger: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [(k.replace("_", " "), trigger[k]) for k in keys if trigger.get(k) not in (None, "", [], {})]


async def _queue_depths(g: GatewayState, queues: list[str]) -> dict[str, dict[str, int]]:
    from stoker.triggers.queue.messages import dlq_name
    from stoker.triggers.queue.store import QueueStore

    if not queues:
        return {}
    store = g.extras.get("queues")
    if store is None:
        store = g.extras["queues"] = QueueStore(g.ctx.redis, g.ctx.keys)
    names = [*queues, *(dlq_name(q) for q in queues)]
    return {s.name: s.to_json() for s in await store.stats(names)}


async def triggers(g: GatewayState, name: str, entries: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The function's triggers, each with what is live about it (next cron fires, queue depth...)."""
    from stoker.triggers.cron.listing import list_schedules
    from stoker.triggers.queue.messages import dlq_name

    kinds = {t["type"] for t in entries}
    schedules = [s for s in await list_schedules(g.ctx, 3) if s["function"] == name] if "cron" in kinds else []
    depths = await _queue_depths(g, [str(t["queue"]) for t in entries if t["type"] == "queue"])
    out: list[dict[str, Any]] = []
    for t in entries:
        kind = t["type"]
        if kind == "cron":
            continue  # listed from the schedules below, with their live state
        item: dict[str, Any] = {"type": kind, "summary": kind, "details": [], "times": []}
        if kind == "http":
            item["summary"] = t.get("route") or f"ANY /fn/{name}"
            item["details"] = [("public", "yes" if t.get("public") else "no (a token with the invoke right)"),
                               *_details(t, ("qualifier",))]
        elif kind == "queue":
            queue = str(t["queue"])
            depth = depths.get(queue, {})
            dead = depths.get(dlq_name(queue), {})
            item["summary"] = f"queue {queue}"
            item["details"] = [("available", depth.get("available", 0)), ("in flight", depth.get("in_flight", 0)),
                               ("delayed", depth.get("delayed", 0)),
                               (f"dead letters ({dlq_name(queue)})", dead.get("available", 0)),
                               *_details(t, ("batch_size", "batch_window", "max_receive", "max_concurrency",
                                             "qualifier")),
                               ("enabled", "yes" if t.get("enabled", True) else "no")]
        elif kind == "files":
            item["summary"] = f"folder {t.get('path')}"
            item["details"] = _details(t, ("pattern", "recursive", "on_success", "on_failure", "poll", "qualifier"))
        elif kind == "dbchanges":
            item["summary"] = f"table {t.get('table')}"
            item["details"] = [("database", _mask_url(t.get("url"))),
                               *_details(t, ("events", "batch_size", "batch_window", "starting_position",
                                             "qualifier"))]
        else:
            item["details"] = [(k, v) for k, v in sorted(t.items()) if k != "type"]
        out.append(item)
    for s in schedules:
        out.append({"type": "cron", "summary": f"{s['expression']} ({s['timezone']})",
                    "details": [("schedule", s["schedule"]), ("missed ticks", s["missed"]),
                                ("qualifier", s["qualifier"] or "$LATEST"), ("leader", s["leader"] or "none yet")],
                    "last_fired": s["last_fired"], "times": s["next"]})
    return out


async def function_page(g: GatewayState, name: str, win: stats.Window, status: str | None) -> dict[str, Any]:
    ctx = g.ctx
    state: FunctionState = await asyncio.to_thread(ctx.require_registry().state, name)
    latest = state.versions[state.latest]
    spec = latest.spec
    aliases_of: dict[int, list[str]] = {}
    for alias in state.aliases.values():
        aliases_of.setdefault(alias.version, []).append(alias.name)
    versions = [{"version": v.version, "deployed_at": v.deployed_at, "deployed_by": v.deployed_by,
                 "code_hash": v.code_hash, "runtime": v.spec.runtime, "memory": v.spec.memory,
                 "timeout": v.spec.timeout, "aliases": sorted(aliases_of.get(v.version, []))}
                for _, v in sorted(state.versions.items(), reverse=True)]
    aliases = [{"name": a.name, "version": a.version, "weights": a.weights, "updated_at": a.updated_at}
               for _, a in sorted(state.aliases.items())]
    recent: list[dict[str, Any]] = []
    if ctx.engine is not None:
        recent = await asyncio.to_thread(list_invocations, ctx.engine,
                                         InvocationFilter(function=name, status=status, limit=RECENT))
    letters = await list_dead_letters(ctx, name, limit=DEAD_LETTERS_SHOWN)
    dead_total = int(await ctx.redis.xlen(ctx.keys.dlq(name)))
    running = int(await ctx.redis.hget(ctx.keys.concurrency, name) or 0)
    nodes = await read_nodes(ctx.redis, ctx.keys, ctx.settings.node_dead_after)
    warm = [{"node": n, "versions": sorted(n.warm_for(name).items(), key=lambda kv: -int(kv[0] or 0))}
            for n in nodes]
    warm = [w for w in warm if w["versions"]]
    return {
        "name": name, "window": win.name, "status": status, "statuses": STATUSES,
        "spec": spec, "latest": state.latest, "code_hash": latest.code_hash,
        "env_names": sorted(spec.env), "versions": versions, "aliases": aliases,
        "figures": (await figures(g, win, name)).get(name) or stats.Figures().to_json(),
        "triggers": await triggers(g, name, spec.triggers),
        "recent": recent, "dead_letters": [d.to_json() for d in letters], "dead_total": dead_total,
        "running": max(0, running), "warm": warm, "ledger": ctx.engine is not None,
    }


# -- one invocation -----------------------------------------------------------------------

def _pretty(text: str | None) -> str | None:
    """Retained JSON, indented when it parses (it may be cut at the retention limit)."""
    if text is None:
        return None
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


async def invocation_page(g: GatewayState, invocation_id: str) -> dict[str, Any]:
    if g.ctx.engine is None:
        raise NotFound("this gateway runs without a ledger database (STOKER_DB_URL): there are no invocations")
    row = await invocation_detail(g.ctx, g.ctx.engine, invocation_id)
    row["payload"], row["result"] = _pretty(row.get("payload")), _pretty(row.get("result"))
    return {"inv": row, "final": row["status"] in FINAL_STATUSES}


# -- nodes --------------------------------------------------------------------------------

async def nodes_page(g: GatewayState) -> dict[str, Any]:
    ctx = g.ctx
    now_ms = int(time.time() * 1000)
    nodes = await read_nodes(ctx.redis, ctx.keys, ctx.settings.node_dead_after, now_ms)
    snapshot = await take_snapshot(ctx.redis, ctx.keys, ctx.settings.node_dead_after)
    return {
        "nodes": [{"node": n, "heartbeat_age": n.heartbeat_age(now_ms),
                   "uptime": (now_ms - n.started_ms) / 1000 if n.started_ms else None,
                   "warm": sorted(n.warm.items())} for n in nodes],
        "dead_after": ctx.settings.node_dead_after,
        "platform": {"nodes": snapshot.nodes, "slots": snapshot.slots, "busy": snapshot.busy,
                     "depth": snapshot.depth, "age": snapshot.age},
    }
