"""The Redis key schema: every key stoker uses, in one place.

All keys start with the configured prefix (STOKER_PREFIX, default "stoker"), so that
several platforms, or several tests, can share one Redis.

Streams (consumer group in brackets)
    {p}:intake:sync              sync calls waiting to be placed        [schedulers]
    {p}:intake:async             async events waiting to be placed      [schedulers]
    {p}:inbox:{node_id}          events placed on one node incarnation  [node]
    {p}:ledger                   ledger records for the SQL writer      [ledger]
    {p}:logs:{function}          log chunks of one function (trimmed by age and length)
    {p}:dlq:{function}           dead letters of one function
    {p}:capacity                 a node freed capacity (schedulers holding events wake on it) [schedulers]

Scheduling state
    {p}:nodes                    zset node_id -> last heartbeat (ms)
    {p}:node:{node_id}           hash: name, slots, load, host, pid, started, warm (json)
    {p}:node:{node_id}:idle      hash function:version -> idle warm workers not yet reserved
    {p}:conc                     hash function -> events placed and not finished; "*" = all
    {p}:waiting:{function}       list of async events held back by a concurrency limit
    {p}:waiting                  set of functions that have held-back events
    {p}:delayed                  zset of retries, member = msgpack [id, fv, type, envelope], score = due (ms)

Registry projection (the SQL registry is the truth; these are rebuilt from it)
    {p}:fn:{function}            hash: latest, concurrency, aliases (json), spec fields
    {p}:fv:{function}:{version}  string: the version's spec (json), immutable
    {p}:functions                set of function names
    {p}:registry                 pub/sub channel: a function changed (message = name)

Metrics (cluster-wide counters, see stoker.platform.metrics)
    {p}:metrics                  hash of counters: inv|fn|status, dur_bucket|fn|le, dur_sum|fn, ...

Sync replies and coordination
    {p}:reply:{gateway_id}       list a gateway waits on for sync answers
    {p}:gateways                 hash gateway url -> last heartbeat (ms)
    {p}:lock:{name}              leases (e.g. lock:provision, the scheduler that tops up min_warm)
    {p}:provisioning:{fv}        warm workers asked for and not yet reported by a heartbeat (ttl 5 s)
"""

from __future__ import annotations

from dataclasses import dataclass

# consumer groups
SCHEDULERS = "schedulers"
NODE_GROUP = "node"
LEDGER_GROUP = "ledger"


@dataclass(frozen=True)
class Keys:
    prefix: str = "stoker"

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # streams
    @property
    def intake_sync(self) -> str:
        return self._k("intake", "sync")

    @property
    def intake_async(self) -> str:
        return self._k("intake", "async")

    def intake(self, sync: bool) -> str:
        return self.intake_sync if sync else self.intake_async

    def inbox(self, node_id: str) -> str:
        return self._k("inbox", node_id)

    @property
    def ledger(self) -> str:
        return self._k("ledger")

    @property
    def capacity(self) -> str:
        return self._k("capacity")

    def logs(self, function: str) -> str:
        return self._k("logs", function)

    def dlq(self, function: str) -> str:
        return self._k("dlq", function)

    # scheduling
    @property
    def write_probe(self) -> str:
        """A key schedulers write before declaring nodes dead: can heartbeats land now?"""
        return self._k("writable")

    @property
    def nodes(self) -> str:
        return self._k("nodes")

    def node(self, node_id: str) -> str:
        return self._k("node", node_id)

    def node_started(self, node_id: str) -> str:
        """The inbox entries a node has started (an interruption spends their attempt)."""
        return self._k("node", node_id, "started")

    def node_idle(self, node_id: str) -> str:
        return self._k("node", node_id, "idle")

    @property
    def concurrency(self) -> str:
        return self._k("conc")

    def waiting(self, function: str) -> str:
        return self._k("waiting", function)

    @property
    def waiting_set(self) -> str:
        return self._k("waiting")

    @property
    def delayed(self) -> str:
        return self._k("delayed")

    # registry projection
    def function(self, name: str) -> str:
        return self._k("fn", name)

    def function_version(self, name: str, version: str) -> str:
        return self._k("fv", name, version)

    @property
    def functions(self) -> str:
        return self._k("functions")

    @property
    def registry_channel(self) -> str:
        return self._k("registry")

    @property
    def metrics(self) -> str:
        return self._k("metrics")

    # replies and coordination
    def reply(self, gateway_id: str) -> str:
        return self._k("reply", gateway_id)

    @property
    def gateways(self) -> str:
        return self._k("gateways")

    def lock(self, name: str) -> str:
        return self._k("lock", name)

    def custom(self, *parts: str) -> str:
        """A key owned by a trigger or feature module (documented in that module)."""
        return self._k(*parts)
