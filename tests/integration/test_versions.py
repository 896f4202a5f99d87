"""Versions, weighted aliases, rollback and deletion through the CLI, on a running platform."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from stoker import Client
from tests.conftest import RunningPlatform, wait_until


def labelled(make_function, label: str, extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    return make_function("shop", "import time\ndef handler(event, context):\n"
                                 "    time.sleep(event.get('sleep', 0))\n"
                                 f"    return {{'label': '{label}', 'version': context.function_version}}\n", extra)


def cli_json(platform: RunningPlatform, *args: str) -> object:
    return json.loads(platform.cli(*args, "--format", "json", check=True).stdout)


def test_versions_aliases_rollback_and_deletion(platform: RunningPlatform, make_function) -> None:
    assert platform.cli("deploy", str(labelled(make_function, "one")), check=True).stdout.startswith(
        "deployed shop: version 1")
    out = platform.cli("deploy", str(labelled(make_function, "one")), check=True).stdout
    assert "unchanged" in out and "version 1" in out
    platform.cli("deploy", str(labelled(make_function, "two")), check=True)
    versions = cli_json(platform, "versions", "shop")
    assert [(v["version"], v["latest"]) for v in versions] == [("1", False), ("2", True)]  # type: ignore[index]
    assert all(v["deployed_by"] == "admin" and len(v["code_hash"]) == 64 for v in versions)  # type: ignore[index]

    assert "created" in platform.cli("alias", "set", "shop", "prod", "1", check=True).stdout
    out = platform.cli("alias", "set", "shop", "prod", "1", "--weight", "2=0.25", check=True).stdout
    assert "25% to version 2" in out
    aliases = cli_json(platform, "alias", "ls", "shop")
    assert aliases == [{"function": "shop", "alias": "prod", "version": "1", "weights": {"2": 0.25},
                        "previous": {"version": "1", "weights": {}}, "updated_at": aliases[0]["updated_at"]}]  # type: ignore[index]
    assert "prod" in platform.cli("alias", "ls", "shop", check=True).stdout
    assert [v["aliases"] for v in cli_json(platform, "versions", "shop")] == [["prod"], ["prod"]]  # type: ignore[union-attr,index]

    # qualifiers: a version, an alias, $LATEST, and name:alias
    assert json.loads(platform.cli("invoke", "shop", "--qualifier", "1", check=True).stdout)["label"] == "one"
    assert json.loads(platform.cli("invoke", "shop", "--qualifier", "$LATEST", check=True).stdout)["label"] == "two"
    assert json.loads(platform.cli("invoke", "shop:prod", check=True).stdout)["label"] in ("one", "two")

    # bad alias changes are refused and change nothing
    for args, words in ((("alias", "set", "shop", "prod", "9"), "no version 9"),
                        (("alias", "set", "shop", "prod", "1", "--weight", "1=0.5"), "own version"),
                        (("alias", "set", "shop", "prod", "1", "--weight", "2=2"), "from 0 to 1"),
                        (("alias", "set", "shop", "prod", "1", "--weight", "two"), "VERSION=SHARE"),
                        (("alias", "set", "shop", "42", "1"), "not only digits")):
        r = platform.cli(*args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    assert cli_json(platform, "alias", "ls", "shop")[0]["weights"] == {"2": 0.25}  # type: ignore[index]

    # rollback: back to the state before the last change, twice is back again, or --to
    out = platform.cli("rollback", "shop", "--alias", "prod", check=True).stdout
    assert "rolled back" in out
    assert cli_json(platform, "alias", "ls", "shop")[0]["weights"] == {}  # type: ignore[index]
    platform.cli("rollback", "shop", "--alias", "prod", check=True)
    assert cli_json(platform, "alias", "ls", "shop")[0]["weights"] == {"2": 0.25}  # type: ignore[index]
    result = cli_json(platform, "rollback", "shop", "--alias", "prod", "--to", "2")
    assert result["version"] == "2" and result["weights"] == {}  # type: ignore[index]
    r = platform.cli("rollback", "shop", "--alias", "nope")
    assert r.returncode == 2 and "no alias 'nope'" in r.stderr

    # deletion: refused while an alias points at it, naming it; bundles no version uses are removed
    r = platform.cli("rm", "shop", "--version", "2")
    assert r.returncode == 2 and "prod" in r.stderr
    platform.cli("alias", "set", "shop", "prod", "1", check=True)
    bundles = platform.home / "bundles"
    assert len(list(bundles.glob("*.zip"))) == 2
    result = cli_json(platform, "rm", "shop", "--version", "2")
    assert result["latest"] == "1" and result["bundles_removed"] == 1  # type: ignore[index]
    assert len(list(bundles.glob("*.zip"))) == 1
    assert [v["version"] for v in cli_json(platform, "versions", "shop")] == ["1"]  # type: ignore[union-attr,index]
    r = platform.cli("invoke", "shop", "--qualifier", "2")
    assert r.returncode == 2 and "no version 2" in r.stderr
    assert json.loads(platform.cli("invoke", "shop", check=True).stdout)["label"] == "one"  # $LATEST is 1 now

    # rolling $LATEST back makes a new version with the older code
    platform.cli("deploy", str(labelled(make_function, "three")), check=True)
    out = platform.cli("rollback", "shop", check=True).stdout
    assert "as new version 4" in out
    assert json.loads(platform.cli("invoke", "shop", check=True).stdout) == {"label": "one", "version": "4"}

    # deleting the function; deployed again, it goes on counting
    r = platform.cli("alias", "rm", "shop", "prod", check=True)
    assert "deleted alias prod" in r.stdout
    assert "deleted shop" in platform.cli("rm", "shop", check=True).stdout
    assert cli_json(platform, "functions") == []
    assert not list(bundles.glob("*.zip"))
    r = platform.cli("versions", "shop")
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert "version 5" in platform.cli("deploy", str(labelled(make_function, "again")), check=True).stdout

    # the ledger records the version that ran and the qualifier it was reached through
    def shop_rows() -> list[dict]:  # type: ignore[type-arg]
        return cli_json(platform, "ledger", "--function", "shop")  # type: ignore[return-value]

    rows = wait_until(lambda: len(shop_rows()) >= 5 and shop_rows(), message="five ledger rows")
    assert {(r["version"], r["qualifier"]) for r in rows} >= {("1", "1"), ("2", "$LATEST"), ("4", "$LATEST")}
    assert any(r["qualifier"] == "prod" for r in rows)


def test_weighted_routing_shares_invocations(platform: RunningPlatform, make_function) -> None:
    platform.cli("deploy", str(labelled(make_function, "one")), check=True)
    platform.cli("deploy", str(labelled(make_function, "two")), check=True)
    platform.cli("alias", "set", "shop", "prod", "1", "--weight", "2=0.3", check=True)
    with Client(platform.url, platform.token) as c:
        labels = [c.invoke("shop:prod", {})["label"] for _ in range(400)]
    share = labels.count("two") / len(labels)
    assert 0.2 <= share <= 0.4, share  # binomial(400, 0.3): 5 standard deviations either side

    def prod_versions() -> dict[str, int]:
        rows = cli_json(platform, "ledger", "--function", "shop", "--limit", "1000")
        counted: dict[str, int] = {}
        for row in rows:  # type: ignore[attr-defined]
            counted[row["version"]] = counted.get(row["version"], 0) + 1
        return counted

    counted = wait_until(lambda: sum(prod_versions().values()) >= 400 and prod_versions(),
                         message="400 ledger rows")
    assert counted == {"1": labels.count("one"), "2": labels.count("two")}


def test_rollback_during_a_burst_fails_no_invocation(platform: RunningPlatform, make_function) -> None:
    platform.cli("deploy", str(labelled(make_function, "one")), check=True)
    platform.cli("deploy", str(labelled(make_function, "two")), check=True)
    platform.cli("alias", "set", "shop", "prod", "1", check=True)
    platform.cli("alias", "set", "shop", "prod", "2", check=True)
    results: list[dict] = []  # type: ignore[type-arg]
    errors: list[Exception] = []
    done = threading.Event()

    def caller(n: int) -> None:
        try:
            with Client(platform.url, platform.token) as c:
                while not done.is_set():
                    results.append({**c.invoke("shop", {"sleep": 0.05}, qualifier="prod"), "thread": n})
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) >= 20, message="the burst to be under way")
        platform.cli("rollback", "shop", "--alias", "prod", check=True)
        wait_until(lambda: sum(r["label"] == "one" for r in results) >= 20 or errors,
                   message="calls to run on version 1 after the rollback")
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    assert all(r["version"] == {"one": "1", "two": "2"}[r["label"]] for r in results)
    # each caller saw version 2, then only version 1: the alias moved once, in one step
    for n in range(4):
        labels = "".join(r["label"][0] for r in results if r["thread"] == n)  # "tttooo"
        assert labels.rstrip("o").strip("t") == "", labels
