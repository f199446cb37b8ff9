"""The operator page (``GET /``): served offline as package data, open while its data needs the read token,
and, in a real headless Chromium against a real daemon, showing the connector, the tags updating and the
pipeline's figures with no console error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor.api.routes.page import STATIC

from .api_helpers import api_client, api_state
from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until
from .test_daemon import CONFIG

READ = "read-token-0123456789abcdef"
ARTIFACTS = REPO / "tests" / "artifacts"
SCREENSHOT_FOR_README = REPO / "docs" / "operator-page.png"


def test_the_page_refers_to_nothing_outside_this_server() -> None:
    for name in ("index.html", "operator.css", "operator.js"):
        text = (STATIC / name).read_text(encoding="utf-8")
        # any scheme-qualified or protocol-relative address would break an offline shop-floor network
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name
        assert "@import" not in text and "url(" not in text, name
        # values reach the DOM as text: no HTML parsing of anything the API sent
        assert not re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write", text), name
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert set(re.findall(r'(?:src|href)="([^"]*)"', html)) == {"/static/operator.css", "/static/operator.js",
                                                                "data:,"}


async def test_the_page_is_open_and_its_data_needs_the_read_token(database: Database) -> None:
    state = api_state(database.dsn, environ={"INGESTOR_API_READ_TOKEN": READ})
    async with api_client(state) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/operator.js"' in page.text
        for asset, kind in (("operator.js", "text/javascript"), ("operator.css", "text/css")):
            response = await client.get(f"/static/{asset}")
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert (await client.get("/static/../app.py")).status_code == 404
        assert (await client.get("/static/index.py")).status_code == 404
        assert (await client.get("/api/status")).status_code == 401
        authorized = await client.get("/api/status", headers={"Authorization": f"Bearer {READ}"})
        assert authorized.status_code == 200 and "tags" in authorized.json()
        # the page is not part of the API's contract
        assert "/" not in (await client.get("/api/openapi.json")).json()["paths"]


@pytest.fixture
def daemon(database: Database, tmp_path: Path) -> Iterator[str]:
    """``ingestor run`` with a generate connector on a free port; yields its base URL."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=database.dsn, port=port, spool=tmp_path / "spool"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    with (tmp_path / "daemon.log").open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)],
                                   cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, 30, "the daemon ready")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # the browser is slow; one server suffices
def test_the_page_shows_the_live_daemon_in_a_real_browser(daemon: str, chromium: object) -> None:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    driver: WebDriver = chromium  # type: ignore[assignment]
    wait = WebDriverWait(driver, 15, poll_frequency=0.1)
    driver.get(daemon + "/")
    assert driver.title.startswith("Ingestor")

    # rows are rebuilt on every poll, so read them in one script call (no stale element references)
    def text(selector: str) -> str:
        return str(driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector))

    def tag_values() -> dict[str, str]:
        return dict(driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#tags tr[data-tag]')]"
            ".map(r => [r.dataset.tag, r.querySelector('.value').textContent]));"))

    # the connector, connected, with a rate computed from two polls
    wait.until(lambda _: text('[data-connector="gen"] .state') == "connected")
    wait.until(lambda _: _number(text('[data-connector="gen"] .rate')) > 0)

    # every tag, and its value moving between polls
    first = wait.until(lambda _: (v := tag_values()) and len(v) == 3 and v)
    assert set(first) == {"gen/M1/temperature", "gen/M1/parts_total", "gen/M2/current"}
    assert 20 <= _number(first["gen/M1/temperature"]) <= 80
    wait.until(lambda _: tag_values()["gen/M1/parts_total"] != first["gen/M1/parts_total"])

    # the pipeline: database connected, numbers for the spool and the writer
    assert text("#db-connected") == "connected"
    wait.until(lambda _: _number(text("#watermark")) > 0)
    for figure in ("#queue-depth", "#spool-readings", "#oldest-unwritten"):
        assert re.match(r"\d", text(figure)), figure
    # the optional parts say they are missing instead of failing
    wait.until(lambda _: text("#oee-note") not in ("", "loading…"))
    wait.until(lambda _: text("#events-note") not in ("", "loading…"))

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "operator-page.png"
    assert driver.save_screenshot(str(screenshot))
    shutil.copyfile(screenshot, SCREENSHOT_FOR_README)

    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def _number(text: str) -> float:
    try:
        return float(text.replace(",", "").split()[0])
    except (ValueError, IndexError):
        return float("-inf")


