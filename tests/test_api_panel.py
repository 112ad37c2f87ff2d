"""The web panel in headless Chromium (Debian's package) against a real server and the real Redis."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from api.auth import mint_token
from readmodel import Layout, ReadModel
from tests.apiserver import ROOT, SECRET, Server, apply, balance_change, task_change

pytestmark = pytest.mark.browser
SCREENSHOT = ROOT / "docs" / "panel.png"


def screenshot_path(tmp_path: Path) -> Path:
    """docs/panel.png when asked for (UPDATE_SCREENSHOTS=1) or missing; else a temporary file."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        return SCREENSHOT
    return tmp_path / "panel.png"


@pytest.fixture
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("Debian's chromium and chromium-driver are needed: run scripts/ensure-chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ls-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--window-size=760,760", "--force-prefers-reduced-motion",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout_s: float = 10.0):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}\npage: {driver.find_element('tag name', 'main').text}")


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def test_the_panel_shows_live_changes_and_catches_up_after_a_forced_reconnect(browser, prefix, real_redis, tmp_path):
    readmodel = ReadModel(real_redis, Layout(prefix))
    user = f"x402:0x{uuid.uuid4().hex[:8]}"
    apply(readmodel, balance_change(user, "1.250000", 3378, 42))
    server = Server(prefix).start()
    try:
        browser.get(f"{server.url}/panel#user={user}&token={mint_token(SECRET, user, 600)}")
        wait_for(browser, "document.getElementById('conn').dataset.state === 'connected'")
        assert text(browser, "usd") == "$1.25" and text(browser, "points") == "3,378"
        assert "token=" not in browser.current_url  # kept out of the address bar
        # The page's CSP allows its own inline style and script (by hash): both ran.
        assert browser.execute_script("return getComputedStyle(document.getElementById('conn')).borderTopLeftRadius") != "0px"

        # A change written through the read model appears without reloading.
        now = int(time.time() * 1000)
        apply(
            readmodel,
            task_change(user, "gen-a", progress=40.0, tool_name="FLUX Schnell", started_ms=now - 42_000),
            task_change(user, "gen-b", progress=None, tool_name="Upscale ×4", started_ms=now - 20_000, expected_ms=60_000),
            task_change(user, "gen-c", status="queued", progress=0.0, source="status", tool_name="Video", started_ms=now - 3_000),
        )
        wait_for(browser, "document.querySelectorAll('li.task').length === 3")
        bar = browser.find_element("css selector", "li[data-id='gen-a'] [role=progressbar]")
        assert bar.get_attribute("aria-valuenow") == "40"
        estimate = browser.find_element("css selector", "li[data-id='gen-b']")
        assert "estimate" in estimate.text  # visibly marked
        assert 25 <= int(estimate.find_element("css selector", "[role=progressbar]").get_attribute("aria-valuenow")) <= 95
        apply(readmodel, task_change(user, "gen-a", progress=65.0, tool_name="FLUX Schnell", started_ms=now - 42_000))
        wait_for(browser, "document.querySelector(\"li[data-id='gen-a'] [role=progressbar]\")"
                          ".getAttribute('aria-valuenow') === '65'")
        shot = screenshot_path(tmp_path)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # Forced reconnect: the server goes away, a change happens meanwhile, the server returns.
        server.stop()
        wait_for(browser, "document.getElementById('conn').dataset.state === 'reconnecting'")
        apply(readmodel, balance_change(user, "2.500000", 6756, 43))
        apply(readmodel, task_change(user, "gen-b", status="payment_failed", live=False, progress=None))
        server.start()
        wait_for(browser, "document.getElementById('conn').dataset.state === 'caught-up'", timeout_s=15)
        assert text(browser, "usd") == "$2.50"
        assert "missed changes applied" in text(browser, "conn")
        # ... and how a task ended while the panel was away is not missed.
        failed = browser.find_element("css selector", "li[data-id='gen-b']")
        assert "leaving" in failed.get_attribute("class") and "failed" in failed.get_attribute("class")
        assert "payment failed" in failed.text.lower()

        # A task that ends shows its final state, then leaves.
        apply(readmodel, task_change(user, "gen-c", status="completed", live=False, progress=100.0, source="status"))
        wait_for(browser, "document.querySelector(\"li[data-id='gen-c']\")?.classList.contains('leaving')")
        assert "completed" in browser.find_element("css selector", "li[data-id='gen-c']").text.lower()
        wait_for(browser, "document.querySelector(\"li[data-id='gen-c']\") === null", timeout_s=10)
    finally:
        server.stop()


def test_an_expired_link_says_so_instead_of_retrying_forever(browser, prefix, real_redis):
    server = Server(prefix).start()
    try:
        expired = mint_token(SECRET, "alice", 10, now=time.time() - 60)
        browser.get(f"{server.url}/panel#user=alice&token={expired}")
        wait_for(browser, "document.getElementById('conn').dataset.state === 'failed'")
        assert "expired" in text(browser, "conn")
    finally:
        server.stop()


def test_a_token_from_a_clock_ahead_is_retried_until_it_is_accepted(browser, prefix, real_redis):
    server = Server(prefix, env={"TOKEN_LEEWAY_S": "0"}).start()
    try:
        ahead = mint_token(SECRET, "alice", 600, now=time.time() + 4)  # minted on a host 4 s ahead
        browser.get(f"{server.url}/panel#user=alice&token={ahead}")
        wait_for(browser, "document.getElementById('conn').textContent.includes('clock')")
        wait_for(browser, "['connected', 'caught-up'].includes(document.getElementById('conn').dataset.state)", timeout_s=15)
        assert text(browser, "points") == "0"  # the snapshot arrived
    finally:
        server.stop()


def test_when_the_token_expires_the_panel_says_so_or_goes_on_with_a_newer_link(browser, prefix, real_redis):
    readmodel = ReadModel(real_redis, Layout(prefix))
    server = Server(prefix, env={"TOKEN_LEEWAY_S": "0"}).start()
    try:
        # No newer link: the stream ends with its reason and the panel says the link expired.
        browser.get(f"{server.url}/panel#user=alice&token={mint_token(SECRET, 'alice', 4)}")
        wait_for(browser, "document.getElementById('conn').dataset.state === 'connected'")
        wait_for(browser, "document.getElementById('conn').dataset.state === 'failed'", timeout_s=15)
        assert "expired" in text(browser, "conn")

        # A newer link opened in the tab before the old token ends: the panel goes on with it.
        browser.get("about:blank")
        browser.get(f"{server.url}/panel#user=bob&token={mint_token(SECRET, 'bob', 3)}")
        wait_for(browser, "document.getElementById('conn').dataset.state === 'connected'")
        browser.execute_script(f"location.hash = 'user=bob&token={mint_token(SECRET, 'bob', 600)}'")
        wait_for(browser, "document.getElementById('conn').dataset.state === 'caught-up'", timeout_s=15)
        apply(readmodel, balance_change("bob", "7.000000", 18918, 1))
        wait_for(browser, "document.getElementById('usd').textContent === '$7.00'")
        assert "token=" not in browser.current_url
    finally:
        server.stop()
