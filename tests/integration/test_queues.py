"""Queues end to end: producers (client, CLI, HTTP), a consuming function in SQS-shaped batches,
partial failures, whole-batch failures, dead letters, redrive, and a consumer killed mid-batch."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter

import httpx
import psutil

from tests.conftest import RunningPlatform, wait_until

RECORDER = '''import hashlib, json
def handler(event, context):
    print("BATCH", len(event["Records"]))
    failures = []
    for r in event["Records"]:
        body = json.loads(r["body"])
        seen = {"n": body.get("n"), "count": r["attributes"]["ApproximateReceiveCount"],
                "md5ok": hashlib.md5(r["body"].encode()).hexdigest() == r["md5OfBody"],
                "source": r["eventSource"], "attrs": r["messageAttributes"]}
        if body.get("poison"):
            failures.append({"itemIdentifier": r["messageId"]})
        else:
            print("RECORD " + json.dumps(seen, sort_keys=True))
    return {"batchItemFailures": failures}
'''


def records(platform: RunningPlatform, function: str) -> list[dict]:
    text = platform.cli("logs", function, check=True).stdout
    return [json.loads(line) for line in re.findall(r"RECORD (\{.*\})", text)]


def peek(platform: RunningPlatform, queue: str) -> list[dict]:
    result = platform.cli("queue", "peek", queue, "--format", "json")
    return json.loads(result.stdout) if result.returncode == 0 else []


def test_producers_batches_partial_failures_and_dead_letters(platform: RunningPlatform, make_function) -> None:
    folder = make_function("recorder", RECORDER, '[[triggers]]\ntype = "queue"\nqueue = "orders"\nbatch_size = 5\n'
                                                 'batch_window = 0.5\nmax_receive = 2\nvisibility_timeout = 1\n'
                                                 'report_batch_item_failures = true')
    platform.cli("deploy", str(folder), check=True)
    client = platform.client()
    ids = [client.enqueue("orders", {"n": n}) for n in range(10)]  # type: ignore[attr-defined]
    ids += client.enqueue_batch("orders", [{"n": n} for n in range(10, 15)],  # type: ignore[attr-defined]
                                attributes={"source": "batch", "weight": 2})
    poison = client.enqueue("orders", {"poison": True})  # type: ignore[attr-defined]
    out = platform.cli("enqueue", "orders", '{"n": 15}', "--attribute", "via=cli", check=True)
    ids.append(out.stdout.strip())
    headers = {"authorization": f"Bearer {platform.token}", "x-stoker-message-attributes": '{"via": "http"}'}
    r = httpx.post(f"{platform.url}/api/queues/orders/messages", content=b'{"n": 16}', headers=headers)
    assert r.status_code == 202 and r.json()["queue"] == "orders"
    ids.append(r.json()["id"])
    assert len(set(ids)) == 17 and poison not in ids

    def all_seen() -> list[dict]:
        got = records(platform, "recorder")
        return got if {g["n"] for g in got} == set(range(17)) else []

    seen = wait_until(all_seen, timeout=60, message="every message to reach the function")
    assert Counter(g["n"] for g in seen) == Counter(range(17)), "a message that succeeded was processed again"
    assert all(g["md5ok"] and g["source"] == "stoker:queue" and g["count"] == "1" for g in seen)
    by_n = {g["n"]: g for g in seen}
    assert by_n[12]["attrs"]["weight"] == {"stringValue": "2", "stringListValues": [], "binaryListValues": [],
                                           "dataType": "Number"}
    assert by_n[15]["attrs"]["via"]["stringValue"] == "cli" and by_n[16]["attrs"]["via"]["stringValue"] == "http"
    logs = platform.cli("logs", "recorder", check=True).stdout
    assert max(int(n) for n in re.findall(r"BATCH (\d+)", logs)) > 1, "no batch held more than one message"

    dead = wait_until(lambda: peek(platform, "orders-dlq"), timeout=60, message="the poison message in orders-dlq")
    assert [d["id"] for d in dead] == [poison] and dead[0]["body"] == {"poison": True}
    assert dead[0]["dead_letter"]["queue"] == "orders" and dead[0]["dead_letter"]["receive_count"] == 2
    queues = {q["name"]: q for q in json.loads(platform.cli("queue", "ls", "--format", "json", check=True).stdout)}
    assert queues["orders"]["consumers"] == ["recorder"]
    assert (queues["orders"]["available"], queues["orders"]["in_flight"]) == (0, 0)
    assert queues["orders-dlq"]["available"] == 1
    rows = json.loads(platform.cli("ledger", "--trigger", "queue", "--format", "json", check=True).stdout)
    assert rows and all(row["function"] == "recorder" and row["status"] == "succeeded" for row in rows)

    # redriven, it is received afresh (and, still poison, dead-lettered again)
    out = platform.cli("queue", "redrive", "orders-dlq", check=True)
    assert "moved 1 message from orders-dlq" in out.stdout
    wait_until(lambda: peek(platform, "orders-dlq"), timeout=60, message="the redriven poison message back in the DLQ")
    assert "purged 1 message from orders-dlq" in platform.cli("queue", "purge", "orders-dlq", check=True).stdout
    assert peek(platform, "orders-dlq") == []


def test_a_failed_batch_is_received_again_as_a_whole(platform: RunningPlatform, make_function) -> None:
    source = '''import json
def handler(event, context):
    if any(r["attributes"]["ApproximateReceiveCount"] == "1" for r in event["Records"]):
        raise RuntimeError("first attempt fails")
    for r in event["Records"]:
        print("RECORD " + json.dumps({"n": json.loads(r["body"])["n"],
                                      "count": r["attributes"]["ApproximateReceiveCount"]}))
'''
    folder = make_function("flaky", source, '[[triggers]]\ntype = "queue"\nqueue = "jobs"\nbatch_size = 10\n'
                                            'batch_window = 2\nvisibility_timeout = 1')
    platform.cli("deploy", str(folder), check=True)
    platform.client().enqueue_batch("jobs", [{"n": n} for n in range(5)])  # type: ignore[attr-defined]
    seen = wait_until(lambda: len(got := records(platform, "flaky")) >= 5 and got, timeout=60,
                      message="the batch to succeed on its second receive")
    assert sorted(g["n"] for g in seen) == list(range(5)) and {g["count"] for g in seen} == {"2"}
    rows = json.loads(platform.cli("ledger", "--function", "flaky", "--format", "json", check=True).stdout)
    assert {"failed", "succeeded"} <= {row["status"] for row in rows}
    assert next(row for row in rows if row["status"] == "failed")["error_type"] == "RuntimeError"


def test_a_consumer_killed_mid_batch_has_its_batch_redelivered(platform: RunningPlatform, make_function) -> None:
    source = '''import json, time
def handler(event, context):
    for r in event["Records"]:
        if r["attributes"]["ApproximateReceiveCount"] == "1":
            time.sleep(25)  # the first receive hangs until its consumer is killed
        print("RECORD " + json.dumps({"n": json.loads(r["body"])["n"],
                                      "count": r["attributes"]["ApproximateReceiveCount"]}))
'''
    folder = make_function("slow", source, 'timeout = 30\n[[triggers]]\ntype = "queue"\nqueue = "work"\n'
                                           'batch_size = 10\nbatch_window = 0.5\nvisibility_timeout = 2')
    platform.cli("deploy", str(folder), check=True)
    platform.client().enqueue_batch("work", [{"n": n} for n in range(3)])  # type: ignore[attr-defined]

    def in_flight() -> bool:
        queues = json.loads(platform.cli("queue", "ls", "--format", "json", check=True).stdout)
        return any(q["name"] == "work" and q["in_flight"] == 3 for q in queues)

    wait_until(in_flight, timeout=60, message="the batch to be received")
    (runner,) = [p for p in psutil.Process(platform.proc.pid).children()
                 if "triggers" in p.cmdline()[-1:]]
    runner.send_signal(signal.SIGKILL)
    seen = wait_until(lambda: len(got := records(platform, "slow")) >= 3 and got, timeout=90,
                      message="the batch to be received again after its consumer died")
    assert sorted(g["n"] for g in seen[:3]) == [0, 1, 2] and {g["count"] for g in seen[:3]} == {"2"}
    assert "triggers exited with -9; restarting it" in platform.logs_text()


def test_bad_input_is_refused_and_changes_nothing(platform: RunningPlatform, make_function, tmp_path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "a" * 270_000}))
    r = platform.cli("enqueue", "orders", "--data-file", str(big))
    assert r.returncode == 2 and "262,144 bytes" in r.stderr
    r = platform.cli("enqueue", "orders", "{nope")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = platform.cli("enqueue", "no such queue", "{}")
    assert r.returncode == 2 and "not a valid queue name" in r.stderr
    r = platform.cli("enqueue", "orders", "1", "--attribute", "AWS.x=1")
    assert r.returncode == 2 and "attribute name" in r.stderr
    headers = {"authorization": f"Bearer {platform.token}"}
    r = httpx.post(f"{platform.url}/api/queues/orders/messages/batch", content=json.dumps(list(range(11))),
                   headers=headers)
    assert r.status_code == 400 and "1 to 10 messages" in r.json()["error"]
    r = httpx.post(f"{platform.url}/api/queues/orders/messages?delay=901", content=b"1", headers=headers)
    assert r.status_code == 400 and "0 to 900" in r.json()["error"]
    r = httpx.post(f"{platform.url}/api/queues/orders/messages", content=b"1")
    assert r.status_code == 401
    r = platform.cli("queue", "peek", "orders")
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert json.loads(platform.cli("queue", "ls", "--format", "json", check=True).stdout) == []

    folder = make_function("badq", "def handler(e, c):\n    return 1\n",
                           '[[triggers]]\ntype = "queue"\nqueue = "orders"\nbatch_size = 0')
    r = platform.cli("deploy", str(folder))
    assert r.returncode == 2 and "batch_size = 0 is not valid" in r.stderr
