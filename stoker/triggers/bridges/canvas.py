"""Celery's canvas through the bridge: links, chains, groups and chords, as a Celery worker runs them.

A task message carries what comes after it in its body's `embed`: `callbacks` (link),
`errbacks` (link_error), `chain` (the rest of a chain, last first) and `chord` (the body
of the chord the task is a header of), each a signature as JSON. After the routed
function answers, the bridge does what Celery's worker does (celery/app/trace.py and the
Redis result backend):

- success: the chord part is counted; each callback is sent with the result prepended to
  its args (unless immutable); the next task of the chain is sent with the result
  prepended and the rest of the chain embedded;
- failure: the chord part is counted as failed; each errback is sent with the failed
  task's id as its argument (Celery's way for errbacks it does not run in-process); every
  later task of the chain is stored with the same failure, so `get()` on the chain raises
  it instead of waiting;
- revoked (and expired): the chord part is counted as revoked and the rest of the chain is
  stored REVOKED (a Celery worker leaves the rest of a chain pending, and its `get()`
  waiting for ever).

Chords are joined the way Celery's Redis backend joins them natively: the producer sets
the header's size (`celery-taskset-meta-<gid>.s`); each finished header task adds its part
(chord_part.lua, counted once per task); the one that completes the set sends the body
with the list of header results, in header order, or stores the body as failed with a
`ChordError` naming the header task that failed. Signatures are sent to their own queue
(`options.queue` / `routing_key`) or else to the queue the bridge serves, as the JSON
protocol-2 message kombu writes.

Refused at once, with a FAILURE (`NotImplementedError`) stored for the task and for every
result a producer may wait on after it, naming what is unsupported: canvas kinds other
than a plain task, a group or a chain in a callback, errback or chain step (a chord there,
chunks, map, starmap), and chords when the bridge stores no results (`backend = "none"`).
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.triggers.bridges.results import RESULT_EXPIRES_S, CeleryResults, exception_info

#: kombu's Redis transport: priority sub-queues are "<queue>\x06\x16<priority>", 0 served first
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
#: the canvas kinds the bridge sends itself (None: a plain task)
SENT_KINDS = (None, "group", "chain")
GROUP_KEY_PREFIX = "celery-taskset-meta-"

Signature = dict[str, Any]


class Unsupported(Exception):
    """A canvas the bridge does not run: the message says what."""


def queue_lists(queue: str) -> list[str]:
    """The lists of one Celery queue, highest priority first."""
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def signatures(value: Any) -> list[Signature]:
    """A link option or embed field (None, one signature, or a list) as a list of signatures."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, dict)]
    return []


def _options(sig: Signature) -> dict[str, Any]:
    options = sig.get("options")
    return options if isinstance(options, dict) else {}


def _members(sig: Signature) -> list[Signature]:
    kwargs = sig.get("kwargs")
    return signatures(kwargs.get("tasks")) if isinstance(kwargs, dict) else []


def check(sig: Signature, role: str) -> None:
    """Raise Unsupported unless the bridge can send `sig` (and what it links to)."""
    kind = sig.get("subtask_type")
    if kind not in SENT_KINDS:
        raise Unsupported(f"the stoker bridge does not run a Celery {kind} as {role} (only tasks, groups and "
                          "chains are sent on by the bridge)")
    for member in _members(sig) if kind else ():
        check(member, f"a member of a {kind} in {role}")
    options = _options(sig)
    for link in signatures(options.get("link")):
        check(link, "a callback (link)")
    for link in signatures(options.get("link_error")):
        check(link, "an errback (link_error)")


def result_ids(sig: Signature) -> list[str]:
    """The ids a producer may be waiting on for `sig`: its own and, for a group or chain, its members'."""
    ids: list[str] = []
    own = _options(sig).get("task_id")
    if isinstance(own, str):
        ids.append(own)
    for member in _members(sig):
        ids.extend(result_ids(member))
    return ids


@dataclass(frozen=True)
class Parent:
    """The task whose outcome a sent signature follows."""

    id: str
    root_id: str
    priority: int | None = None


def _when(value: Any, now: dt.datetime) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (now + dt.timedelta(seconds=float(value))).isoformat()
    return str(value)


def task_message(sig: Signature, prefix: list[Any], parent: Parent, default_queue: str, origin: str,
                 chain: list[Signature] | None = None, group_id: str | None = None,
                 group_index: int | None = None) -> tuple[str, str, bytes]:
    """(list, task id, message): a plain signature as the JSON protocol-2 message kombu's Redis transport writes."""
    options = _options(sig)
    now = dt.datetime.now(dt.UTC)
    args = ([] if sig.get("immutable") else list(prefix)) + list(sig.get("args") or [])
    kwargs = sig.get("kwargs") if isinstance(sig.get("kwargs"), dict) else {}
    task_id = str(options.get("task_id") or uuid.uuid4())
    eta = _when(options.get("eta"), now) or (_when(options["countdown"], now) if options.get("countdown") else None)
    queue = options.get("queue")
    if isinstance(queue, dict):
        queue = queue.get("name")
    queue = str(queue or options.get("routing_key") or default_queue)
    priority = options.get("priority", parent.priority)
    step = 0
    if isinstance(priority, int) and not isinstance(priority, bool):
        step = PRIORITY_STEPS[max(0, bisect.bisect(PRIORITY_STEPS, max(0, min(9, priority))) - 1)]
    embed = {"callbacks": signatures(options.get("link")) or None,
             "errbacks": signatures(options.get("link_error")) or None,
             "chain": chain or None, "chord": options.get("chord")}
    headers: dict[str, Any] = {
        "lang": "py", "task": sig.get("task"), "id": task_id, "shadow": None, "eta": eta,
        "expires": _when(options.get("expires"), now), "group": group_id or options.get("group_id"),
        "group_index": group_index if group_index is not None else options.get("group_index"), "retries": 0,
        "timelimit": [None, None], "root_id": parent.root_id, "parent_id": parent.id,
        "argsrepr": repr(tuple(args)), "kwargsrepr": repr(kwargs), "origin": origin,
        "ignore_result": options.get("ignore_result"), "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {},
    }
    body = base64.b64encode(orjson.dumps([args, kwargs, embed])).decode()
    properties = {"correlation_id": task_id, "reply_to": options.get("reply_to"), "delivery_mode": 2,
                  "delivery_info": {"exchange": "", "routing_key": queue}, "priority": step,
                  "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    message = orjson.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                            "headers": headers, "properties": properties})
    return queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}", task_id, message


@dataclass(frozen=True)
class Links:
    """What comes after one task, from its message."""

    callbacks: list[Signature]
    errbacks: list[Signature]
    chain: list[Signature]  # the rest of the chain, last first
    chord: Signature | None
    group: str | None
    group_index: int | None

    @classmethod
    def of(cls, embed: dict[str, Any], headers: dict[str, Any]) -> Links:
        chord = embed.get("chord")
        index = headers.get("group_index")
        return cls(signatures(embed.get("callbacks")), signatures(embed.get("errbacks")),
                   signatures(embed.get("chain")), chord if isinstance(chord, dict) else None,
                   headers.get("group") if isinstance(headers.get("group"), str) else None,
                   index if isinstance(index, int) and not isinstance(index, bool) else None)

    def unsupported(self, can_join: bool) -> str | None:
        """Why the bridge refuses this task's links, or None."""
        try:
            for sig in self.callbacks:
                check(sig, "a callback (link)")
            for sig in self.errbacks:
                check(sig, "an errback (link_error)")
            for sig in self.chain:
                check(sig, "a step of a chain")
            if self.chord is not None:
                if not can_join:
                    return "the stoker bridge runs a Celery chord only with a result backend (it stores no results)"
                if self.group is None:
                    return "a Celery chord header task without a group id: the stoker bridge cannot join it"
                check(self.chord, "the body of a chord")
        except Unsupported as e:
            return str(e)
        return None

    def waited_on(self) -> list[str]:
        """The results a producer may wait on after this task (the chain's, the chord body's)."""
        ids: list[str] = []
        for sig in self.chain:
            ids.extend(result_ids(sig))
        if self.chord is not None:
            ids.extend(result_ids(self.chord))
        return ids


class Canvas:
    """Sends the signatures that follow a task, and joins chords, for one bridge."""

    def __init__(self, broker: aioredis.Redis, results: CeleryResults | None, queue: str, origin: str) -> None:
        self.broker = broker
        self.results = results
        self.queue = queue
        self.origin = origin
        self._chord_part = None if results is None else results.redis.register_script(
            (resources.files("stoker.triggers.bridges") / "chord_part.lua").read_text())

    async def send(self, sig: Signature, prefix: list[Any], parent: Parent, chain: list[Signature] | None = None,
                   group_id: str | None = None, group_index: int | None = None) -> None:
        kind = sig.get("subtask_type")
        if kind == "group":
            gid = str(_options(sig).get("task_id") or uuid.uuid4())
            head = [] if sig.get("immutable") else prefix
            for i, member in enumerate(_members(sig)):
                await self.send(member, head, parent, group_id=gid, group_index=i)
            return
        if kind == "chain":
            members = _members(sig)
            if members:
                head = [] if sig.get("immutable") else prefix
                rest = (chain or []) + list(reversed(members[1:]))
                await self.send(members[0], head, parent, chain=rest, group_id=group_id, group_index=group_index)
            return
        if kind is not None:  # checked before the task ran; a redelivered old message may still hold one
            raise Unsupported(f"the stoker bridge does not run a Celery {kind}")
        name, _, message = task_message(sig, prefix, parent, self.queue, self.origin, chain, group_id, group_index)
        await self.broker.lpush(name, message)

    async def _store(self, ids: list[str], status: str, result: Any, traceback: str | None) -> None:
        if self.results is not None:
            for task_id in ids:
                await self.results.store(task_id, status, result, traceback)

    async def refuse(self, task_id: str, links: Links, reason: str) -> None:
        """Store the refusal for the task and every result that would have followed it."""
        info = exception_info("NotImplementedError", reason)
        await self._store([task_id, *links.waited_on()], "FAILURE", info, None)

    async def succeeded(self, parent: Parent, links: Links, result: Any) -> None:
        if links.chord is not None:
            await self._join(parent, links, "SUCCESS", result)
        for sig in links.callbacks:
            await self.send(sig, [result], parent)
        if links.chain:
            rest = list(links.chain)
            await self.send(rest.pop(), [result], parent, chain=rest)

    async def failed(self, parent: Parent, links: Links, status: str, info: Any, traceback: str | None) -> None:
        """After a FAILURE or a REVOKED: the chord part, errbacks (failures only), the rest of the chain."""
        if links.chord is not None:
            await self._join(parent, links, status, info)
        if status == "FAILURE":
            for sig in links.errbacks:
                await self.send(sig, [parent.id], parent)
        ids = [i for sig in links.chain for i in result_ids(sig)]
        await self._store(ids, status, info, traceback)

    async def _join(self, parent: Parent, links: Links, status: str, result: Any) -> None:
        assert self._chord_part is not None and links.chord is not None and links.group is not None
        key = GROUP_KEY_PREFIX + links.group
        part = orjson.dumps([links.group_index if links.group_index is not None else 0, parent.id, status, result])
        parts: Any = await self._chord_part(
            keys=[f"{key}.stoker-parts", f"{key}.s", f"{key}.t", f"{key}.stoker-claim"],
            args=[parent.id, part, RESULT_EXPIRES_S])
        if not parts:
            return
        decoded = sorted((orjson.loads(p) for p in parts), key=lambda p: p[0])
        body = links.chord
        for _, task_id, state, value in decoded:
            if state in ("FAILURE", "REVOKED"):
                what = value.get("exc_type", state) if isinstance(value, dict) else state
                message = value.get("exc_message", []) if isinstance(value, dict) else []
                message = message[0] if isinstance(message, list) and message else message
                info = exception_info("ChordError", f"Dependency {task_id} raised {what}({message!r})",
                                      "celery.exceptions")
                await self._store(result_ids(body), "FAILURE", info, None)
                for sig in signatures(_options(body).get("link_error")):
                    await self.send(sig, [_options(body).get("task_id") or task_id], parent)
                return
        await self.send(body, [[value for _, _, _, value in decoded]], parent)
