"""/metrics (cluster-wide, from Redis), /healthz and /openapi.json on a running gateway."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stoker import Client
from tests.conftest import RunningPlatform, wait_until


def metrics(platform: RunningPlatform) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{platform.url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_the_cluster(platform: RunningPlatform, make_function) -> None:
    platform.cli("deploy", str(make_function("ok", "def handler(event, context):\n    return 1\n")), check=True)
    slow = make_function("slow", "import time\ndef handler(event, context):\n    time.sleep(event['s'])\n",
                         "concurrency = 1\ntimeout = 60")
    platform.cli("deploy", str(slow), check=True)
    with Client(platform.url, platform.token) as c:
        for _ in range(3):
            c.invoke("ok")
        # one event runs, the others wait behind the concurrency limit of 1
        for _ in range(3):
            c.invoke_async("slow", {"s": 4})

    inv = ("stoker_invocations_total", (("function", "ok"), ("status", "succeeded")))
    m = wait_until(lambda: (m := metrics(platform))[inv] == 3 and m, message="three invocations counted")
    assert m[("stoker_cold_starts_total", (("function", "ok"),))] == 1
    assert m[("stoker_invocation_duration_seconds_count", (("function", "ok"),))] == 3
    assert m[("stoker_invocation_duration_seconds_bucket", (("function", "ok"), ("le", "+Inf")))] == 3
    assert m[("stoker_invocations_total", (("function", "slow"), ("status", "failed")))] == 0
    assert m[("stoker_nodes", ())] == 1

    m = wait_until(lambda: (m := metrics(platform))[("stoker_concurrent_executions", ())] == 1
                   and m[("stoker_queue_depth", (("queue", "waiting"),))] >= 1 and m,
                   message="one slow event running and others waiting")
    assert m[("stoker_event_age_seconds", (("queue", "waiting"),))] > 0


def test_health_and_openapi(platform: RunningPlatform) -> None:
    r = httpx.get(f"{platform.url}/healthz")
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("status", "redis", "database", "triggers")} == {
        "status": "ok", "redis": "ok", "database": "ok", "triggers": "ok"}
    spec = httpx.get(f"{platform.url}/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/api/functions/{name}/aliases/{alias}" in spec["paths"]
    # every documented GET without path parameters answers with a status it documents
    auth = {"Authorization": f"Bearer {platform.token}"}
    for path, ops in spec["paths"].items():
        if "get" in ops and "{" not in path:
            r = httpx.get(f"{platform.url}{path}", headers=auth)
            assert str(r.status_code) in ops["get"]["responses"], (path, r.status_code, r.text[:200])
