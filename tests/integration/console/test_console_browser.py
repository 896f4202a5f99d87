"""The console in a real headless Chromium, as an operator uses it: sign in, read the overview and its
charts, follow a function to an invocation's logs, watch figures change without reloading,
redrive dead letters after fixing a function, look at the nodes, sign out.

Screenshots of every step are kept in test-artifacts/console/."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from stoker.errors import FunctionError
from tests.conftest import RunningPlatform, wait_until
from tests.integration.console.conftest import ARTIFACTS, write_function


class Console:
    """A browser on the console, with waits that tolerate the page re-rendering its live parts."""

    def __init__(self, driver: Any, platform: RunningPlatform, test: str) -> None:
        self.d = driver
        self.url = platform.url
        self.test = test

    def open(self, path: str) -> None:
        self.d.get(self.url + path)

    def text(self) -> str:
        try:
            return str(self.d.find_element(By.TAG_NAME, "body").text)
        except WebDriverException:  # the page is being replaced
            return ""

    def shot(self, step: str) -> Path:
        path = ARTIFACTS / f"{self.test}-{step}.png"
        self.d.save_screenshot(str(path))
        return path

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float = 30) -> Any:
        def attempt(_: Any) -> Any:
            try:
                return condition()
            except WebDriverException:  # an element replaced by a live update while it was read
                return False

        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.3).until(attempt)
        except Exception:
            self.shot("FAILED")
            raise AssertionError(f"{what}; the page shows: {self.text()[:800]}") from None

    def sign_in(self, token: str) -> None:
        box = self.d.find_element(By.CSS_SELECTOR, "input[type=password][name=token]")
        box.clear()
        box.send_keys(token)
        box.submit()

    def cell(self, function: str, column: str) -> str:
        """The text of one cell of the overview's function table."""
        headers = [th.text for th in self.d.find_elements(By.CSS_SELECTOR, "table.functions thead th")]
        row = self.d.find_element(By.XPATH,
                                  f"//table[contains(@class,'functions')]//tbody/tr[th/a[text()='{function}']]")
        return str(row.find_elements(By.XPATH, "./th|./td")[headers.index(column)].text)

    def chart_drawn(self) -> bool:
        return any(e.size["width"] >= 100 and e.size["height"] >= 50
                   for e in self.d.find_elements(By.CSS_SELECTOR, ".chart canvas"))

    def fits_the_window(self) -> bool:
        return bool(self.d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))

    def loaded_from(self) -> set[str]:
        """The origins of every resource the page loaded, and of the page itself."""
        names = self.d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                      ".concat([location.href])")
        return {f"{urlsplit(n).scheme}://{urlsplit(n).netloc}" for n in names}


def invoke_mix(platform: RunningPlatform, numbers: range) -> None:
    client = platform.client()
    for i in numbers:
        with contextlib.suppress(FunctionError):  # one in three fails, on purpose
            client.invoke("mix", {"i": i})  # type: ignore[attr-defined]


def test_sign_in_and_follow_a_failure_down_to_its_logs(console_platform: RunningPlatform, browser: Any) -> None:
    p = console_platform
    invoke_mix(p, range(1, 13))  # 3, 6, 9 and 12 fail
    c = Console(browser, p, "drill-down")
    c.open("/console")
    c.wait_for("no sign-in form", lambda: c.d.find_elements(By.NAME, "token"))
    assert urlsplit(c.d.current_url).path == "/console/login"
    c.shot("1-sign-in")
    c.sign_in("not-the-token")
    c.wait_for("a wrong token is not refused", lambda: "not valid" in c.text())
    c.sign_in(p.token)
    c.wait_for("the overview does not list the functions", lambda: all(n in c.text() for n in ("mix", "hello",
                                                                                                 "doomed", "jobs")))
    assert p.token not in c.d.current_url
    c.wait_for("no chart is drawn", c.chart_drawn)
    c.wait_for("the overview does not count mix's invocations", lambda: c.cell("mix", "Invocations") == "12")
    assert c.cell("mix", "Errors") == "4" and c.cell("mix", "Error rate") == "33%"
    assert c.cell("mix", "Cold starts").startswith("1 ")
    assert c.cell("mix", "Cost").startswith("$0.0")
    assert c.fits_the_window()
    assert c.loaded_from() == {p.url}
    c.shot("2-overview")

    c.d.find_element(By.LINK_TEXT, "mix").click()
    c.wait_for("the function page does not show the failures", lambda: "RuntimeError" in c.text())
    assert urlsplit(c.d.current_url).path == "/console/functions/mix"
    c.wait_for("no chart on the function page", c.chart_drawn)
    text = c.text()
    assert "version 1" in text and "Recent invocations" in text and "Warm workers" in text
    c.shot("3-function")
    c.d.find_element(By.LINK_TEXT, "failed").click()  # only the failures
    c.wait_for("the status filter does not keep failures only",
               lambda: "status=failed" in c.d.current_url
               and {e.text for e in c.d.find_elements(By.CSS_SELECTOR, "table.invocations .status")} == {"failed"})
    links = c.d.find_elements(By.CSS_SELECTOR, "table.invocations a[href^='/console/invocations/']")
    assert len(links) == 4
    links[0].click()
    c.wait_for("the invocation page does not show its logs", lambda: "console check" in c.text())
    text = c.text()
    assert re.search(r"console check (3|6|9|12)", text)
    assert "RuntimeError" in text and "START RequestId" in text and "REPORT RequestId" in text
    assert re.fullmatch(r"/console/invocations/[0-9a-f-]{36}", urlsplit(c.d.current_url).path)
    c.shot("4-invocation")

    c.d.find_element(By.LINK_TEXT, "Nodes").click()
    c.wait_for("the nodes page does not show a live node with mix warm",
               lambda: "alive" in c.text() and "mix:1" in c.text())
    assert re.search(r"\d+(\.\d)? s ago", c.text())
    c.shot("5-nodes")


def test_figures_change_without_reloading(console_platform: RunningPlatform, browser: Any) -> None:
    p = console_platform
    c = Console(browser, p, "live")
    c.open("/console?window=15m")
    if c.d.find_elements(By.NAME, "token"):
        c.sign_in(p.token)
    before = int(c.wait_for("the overview does not show hello", lambda: c.cell("hello", "Invocations")))
    c.d.execute_script("window.__notReloaded = true")
    client = p.client()
    for name in ("a", "b", "c"):
        client.invoke("hello", {"name": name})  # type: ignore[attr-defined]
    c.wait_for("the overview did not update hello's count by itself",
               lambda: c.cell("hello", "Invocations") == str(before + 3))
    assert c.d.execute_script("return window.__notReloaded === true")
    assert "live ·" in c.d.find_element(By.CSS_SELECTOR, "[data-live-state]").text
    c.shot("overview-updated")


def test_redrive_dead_letters_after_fixing_the_function(console_platform: RunningPlatform, browser: Any,
                                                       tmp_path: Path) -> None:
    p = console_platform
    client = p.client()
    c = Console(browser, p, "redrive")
    c.open("/console/functions/doomed")
    if c.d.find_elements(By.NAME, "token"):
        c.sign_in(p.token)
    c.wait_for("the doomed page did not open", lambda: "Dead letters" in c.text())
    before = len(client.dead_letters("doomed"))  # type: ignore[attr-defined]
    c.d.execute_script("window.__notReloaded = true")
    for i in range(2):
        client.invoke_async("doomed", {"order": i})  # type: ignore[attr-defined]
    c.wait_for("the dead letters did not appear by themselves",
               lambda: len(c.d.find_elements(By.CSS_SELECTOR, "table.dead tbody tr")) == before + 2)
    assert c.d.execute_script("return window.__notReloaded === true")
    assert "ValueError" in c.text() and '{"order":1}' in c.text()
    c.shot("1-dead-letters")

    # the fix: a new version that works; redriven events run it
    fixed = write_function(tmp_path, "doomed", "def handler(event, context):\n    return {'fixed': event}\n",
                           "retries = 0\nretain_payloads = true")
    client.deploy(fixed)  # type: ignore[attr-defined]
    redrive_all = "//button[starts-with(text(), 'Redrive all')]"
    c.wait_for("no redrive button", lambda: c.d.find_element(By.XPATH, redrive_all).click() or True)
    alert = c.wait_for("redrive all did not ask first", lambda: c.d.switch_to.alert)
    assert "Send all" in alert.text
    alert.accept()
    c.wait_for("no notice of the redrive", lambda: "sent back as new invocations" in c.text())
    c.wait_for("the dead letters did not go", lambda: "None: every async event" in c.text())
    wait_until(lambda: not client.dead_letters("doomed"), timeout=30, message="an empty dead-letter queue")  # type: ignore[attr-defined]
    c.shot("2-redriven")
    # the redriven invocations ran the fixed version: their results are on their pages
    c.d.find_element(By.LINK_TEXT, "succeeded").click()
    c.wait_for("no succeeded invocation after the redrive",
               lambda: c.d.find_elements(By.CSS_SELECTOR, "table.invocations a[href^='/console/invocations/']"))
    c.d.find_elements(By.CSS_SELECTOR, "table.invocations a[href^='/console/invocations/']")[0].click()
    c.wait_for("the payload and result are not shown", lambda: '"fixed"' in c.text() and '"order"' in c.text())
    c.shot("3-result")


@pytest.mark.parametrize("width", [1280, 1366])
def test_pages_fit_a_laptop_screen(console_platform: RunningPlatform, browser: Any, width: int) -> None:
    p = console_platform
    c = Console(browser, p, f"laptop-{width}")
    browser.set_window_size(width, 800)
    try:
        c.open("/console")
        if c.d.find_elements(By.NAME, "token"):
            c.sign_in(p.token)
        for path in ("/console", "/console/functions/jobs", "/console/nodes"):
            c.open(path)
            c.wait_for(f"{path} did not render", lambda: "Sign out" in c.text())
            assert c.fits_the_window(), path
            c.shot(path.strip("/").replace("/", "-"))
    finally:
        browser.set_window_size(1400, 1000)


def test_sign_out(console_platform: RunningPlatform, browser: Any) -> None:
    p = console_platform
    c = Console(browser, p, "sign-out")
    c.open("/console")
    if c.d.find_elements(By.NAME, "token"):
        c.sign_in(p.token)
    c.wait_for("not signed in", lambda: "Sign out" in c.text())
    assert browser.get_cookie("stoker_console")["httpOnly"] is True
    assert c.d.execute_script("return document.cookie") == ""  # the session is out of scripts' reach
    c.d.find_element(By.XPATH, "//button[text()='Sign out']").click()
    c.wait_for("signing out did not lead to the sign-in form", lambda: c.d.find_elements(By.NAME, "token"))
    assert browser.get_cookie("stoker_console") is None
    c.open("/console/nodes")
    c.wait_for("a signed-out browser still sees the console", lambda: c.d.find_elements(By.NAME, "token"))
    assert "next=%2Fconsole%2Fnodes" in c.d.current_url
    c.sign_in(p.token)
    c.wait_for("signing in again does not lead back to the nodes",
               lambda: urlsplit(c.d.current_url).path == "/console/nodes" and "alive" in c.text())
    c.shot("back")
