"""A running platform for the console's tests, with functions that give its pages something to show:
`mix` (prints, and fails one call in three), `hello`, `doomed` (async, no retries: its failures
become dead letters) and `jobs` (a cron, a queue and a files trigger)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

MIX = '''def handler(event, context):
    print("console check", event["i"])
    if event["i"] % 3 == 0:
        raise RuntimeError("third")
    return event["i"]
'''
DOOMED = '''def handler(event, context):
    print("doomed", event)
    raise ValueError("never works")
'''


def write_function(root: Path, name: str, source: str, extra: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(source)
    (folder / "stoker.toml").write_text(f'[function]\nname = "{name}"\nhandler = "handler.handler"\n{extra}\n')
    return folder


@pytest.fixture(scope="module")
def console_platform(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("console")
    functions = root / "functions"
    inbox = root / "inbox"
    inbox.mkdir()
    deploy = [
        write_function(functions, "mix", MIX),
        write_function(functions, "hello", "def handler(event, context):\n    return {'hello': event.get('name')}\n",
                       'description = "Says hello"'),
        write_function(functions, "doomed", DOOMED, "retries = 0\nretain_payloads = true"),
        write_function(functions, "jobs", "def handler(event, context):\n    return None\n",
                       '[[triggers]]\ntype = "cron"\nschedule = "*/5 * * * *"\nname = "tidy"\n'
                       '[[triggers]]\ntype = "queue"\nqueue = "orders"\n'
                       f'[[triggers]]\ntype = "files"\npath = "{inbox}"\npattern = "*.csv"\n'),
    ]
    running = start_platform(root / "home", redis_server.url, "t" + uuid.uuid4().hex[:10], deploy=deploy)
    try:
        client = running.client()
        wait_until(lambda: {f["name"] for f in client.functions()} >= {"mix", "hello", "doomed", "jobs"},  # type: ignore[attr-defined]
                   timeout=60, message="the console's functions to be deployed")
        yield running
    finally:
        running.stop()


# -- a real browser -----------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: screenshots kept after the run (gitignored), one per step worth seeing
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Selenium (Debian's chromium and chromium-driver; .ci/run installs them)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver"
        if os.environ.get("STOKER_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message + " (CI sets STOKER_REQUIRE_BROWSER=1 and installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--disable-sync", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
