"""The operator page (``GET /``): served offline as package data, open while its data needs the read token,
and, in a real headless Chromium against a real daemon, showing the connector, the tags updating and the
pipeline's figures with no console error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from ingestor.api.routes import page
from ingestor.api.routes.page import STATIC

from .api_helpers import api_client, api_state
from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until

READ = "read-token-0123456789abcdef"
ARTIFACTS = REPO / "tests" / "artifacts"
T = TypeVar("T")


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


class Press:
    """The OPC UA simulator playing PRESS-01 in a thread of its own (the browser test drives Selenium, which
    blocks), with a way to change a machine variable as a PLC would."""

    def __init__(self) -> None:
        from simulators.machine import Machine, MachineProfile
        from simulators.opcua import OpcUaSimulator, SimulatorOptions

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="opcua-simulator", daemon=True)
        machine = Machine("PRESS-01", MachineProfile(cycle_time=0.5, scrap_rate=0.1, mean_time_between_failures=1e9,
                                                     mean_time_between_planned_stops=1e9))
        self.simulator = OpcUaSimulator(SimulatorOptions(port=free_port(), interval=0.1), machines=[machine])

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def write(self, parameter: str, value: int) -> None:
        self.call(self.simulator.write("PRESS-01", parameter, value))


@pytest.fixture
def press() -> Iterator[Press]:
    press = Press()
    press.thread.start()
    try:
        press.call(press.simulator.start())
        yield press
        press.call(press.simulator.stop())
    finally:
        press.loop.call_soon_threadsafe(press.loop.stop)
        press.thread.join(10)


@pytest.fixture
def daemon(database: Database, press: Press, tmp_path: Path) -> Iterator[str]:
    """``ingestor run`` reading the press from the simulator, on a free port; yields its base URL."""
    from .test_events import DAEMON

    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(DAEMON.format(dsn=database.dsn, endpoint=press.simulator.endpoint, spool=tmp_path / "spool",
                                    port=port))
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


@pytest.mark.slow
@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # the browser is slow; one server suffices
def test_the_page_shows_the_live_daemon_in_a_real_browser(daemon: str, press: Press, chromium: object) -> None:
    """The daemon reads a press from the OPC UA simulator; the page shows the connector, the tags moving, the
    pipeline's figures, a stop put into the simulator within seconds in the downtime feed, and its end, and
    the shift's OEE once the derivation wrote the first production record."""
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    # what the page computes from: a count per connector (rates) and the age of the oldest unwritten reading
    wait_until(lambda: json.loads(http_get(daemon + "/api/status")[1])["connectors"]["press"]["readings_received"],
               30, "readings from the simulator")
    status = json.loads(http_get(daemon + "/api/status")[1])
    assert 0 <= status["oldest_unwritten_age_s"] < 30

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

    def feed() -> list[str]:
        return list(driver.execute_script("return [...document.querySelectorAll('#downtime li')].map(li => li.textContent);"))

    # the connector, connected, with a rate computed from two polls
    wait.until(lambda _: text('[data-connector="press"] .state') == "connected")
    wait.until(lambda _: _number(text('[data-connector="press"] .rate')) > 0)

    # every tag, and the part counter moving between polls
    first = wait.until(lambda _: (v := tag_values()) and len(v) == 4 and v)
    assert set(first) == {f"press/PRESS-01/{p}" for p in ("parts_total", "parts_good", "state", "reason")}
    assert _number(first["press/PRESS-01/state"]) == 1
    wait.until(lambda _: tag_values()["press/PRESS-01/parts_total"] != first["press/PRESS-01/parts_total"])

    # the pipeline: database connected, numbers for the spool and the writer
    assert text("#db-connected") == "connected"
    wait.until(lambda _: _number(text("#watermark")) > 0)
    for figure in ("#queue-depth", "#spool-readings", "#oldest-unwritten"):
        assert re.match(r"\d", text(figure)), figure
    wait.until(lambda _: text("#events-note") == "no downtime since the page opened")

    # a breakdown, as the PLC would show it: the reason code, then the state; it reaches the feed in seconds
    press.write("reason", 1)
    press.write("state", 3)
    stopped_at = time.monotonic()
    WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda _: len(feed()) == 1)
    latency = time.monotonic() - stopped_at
    print(f"stop written in the simulator -> shown in the page's feed: {latency * 1000:.0f} ms")
    assert "PRESS-01" in feed()[0] and "started" in feed()[0] and "Mechanical" in feed()[0], feed()
    wait.until(lambda _: _number(tag_values()["press/PRESS-01/state"]) == 3)  # the stop lasts a status poll
    press.write("state", 1)
    press.write("reason", 0)
    WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda _: len(feed()) == 2)
    assert re.search(r"PRESS-01 ended after \d+ s — Mechanical", feed()[0]), feed()

    # the shift's OEE per machine, once the derivation closed the first one-minute cell
    WebDriverWait(driver, 120, poll_frequency=0.5).until(lambda _: text("#oee-note") == "")
    head = text('#oee [data-equipment="PRESS-01"] .machine-head')
    assert re.search(r"OEE \d+\.\d %", head), head
    widths = driver.execute_script("return [...document.querySelectorAll('#oee .bar > span')].map(s => s.style.width);")
    assert len(widths) == 3 and all(re.fullmatch(r"[\d.]+%", w) for w in widths), widths

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "operator-page.png"
    assert driver.save_screenshot(str(screenshot))
    # docs/operator-page.png is this file, copied by hand when the page changes (a test never rewrites the tree)

    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def _number(text: str) -> float:
    try:
        return float(text.replace(",", "").split()[0])
    except (ValueError, IndexError):
        return float("-inf")




HOSTILE = '<img src=x onerror="window.injected=1">'


def _stand_in_api() -> tuple[FastAPI, list[dict[str, str]]]:
    """The page's router in front of stand-ins for the endpoints other branches build (the shift's OEE, the
    events WebSocket with the documented envelope), all behind a read token, with a hostile tag name."""
    app = FastAPI(openapi_url="/api/openapi.json")
    app.include_router(page.router)
    connections: list[dict[str, str]] = []

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {READ}"

    @app.get("/api/status")
    async def status(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"status": 401, "title": "authentication required"}, status_code=401)
        return JSONResponse({
            "ready": True, "instance_id": "stand-in", "now_us": 1_000_000_000, "oldest_unwritten_age_s": 0.2,
            "database": {"connected": True, "watermark": 7}, "queue": {"readings": 0, "capacity": 10},
            "spool": {"readings": 0, "batches": 0, "bytes": 0}, "connectors": {},
            "tags": [{"connector": "c", "equipment": "M1", "parameter": HOSTILE, "value": 1.5, "unit": "",
                      "quality": 0, "timestamp_us": 999_000_000}]})

    @app.get("/api/manufacturing-metrics/oee/live")
    async def oee(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"status": 401}, status_code=401)
        # the shape of GET /api/manufacturing-metrics/oee/live: ratios 0..1
        return JSONResponse({"at": "2026-01-01T00:00:00Z", "equipment": [
            {"equipment": {"id": 1, "code": "M1", "name": "Machine 1"}, "site": "S1",
             "shift": {"code": "DAY", "name": "Day"}, "date": "2026-01-01", "lastUpdate": None,
             "metrics": {"availability": 0.9, "performance": 0.8, "quality": 0.99, "oee": 0.7128}}]})

    # FastAPI leaves WebSocket routes out of the schema; the page connects only when the schema lists the
    # path, so the events endpoint documents itself with a plain-HTTP answer at the same path
    @app.get("/api/events", status_code=426)
    async def events_over_http() -> Response:
        return Response(status_code=426, headers={"Upgrade": "websocket"})

    @app.websocket("/api/events")
    async def events(socket: WebSocket) -> None:
        query = dict(socket.query_params)
        connections.append(query)
        if query.get("access_token") != READ:
            await socket.close(code=1008)
            return
        await socket.accept()
        event_id = int(query.get("since", "0")) + 1
        await socket.send_text(json.dumps({
            "id": event_id, "type": "downtime", "timestamp": "2026-12-03T10:00:00Z", "equipmentId": 1,
            "equipmentCode": "M1", "data": {"reason": {"code": "JAM", "description": HOSTILE}}}))
        if event_id == 1:
            await socket.close()  # the page must come back with since=1
        else:
            with contextlib.suppress(WebSocketDisconnect):
                await socket.receive_text()

    return app, connections


@pytest.fixture
def stand_in() -> Iterator[tuple[str, list[dict[str, str]]]]:
    app, connections = _stand_in_api()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the stand-in API")
        yield f"http://127.0.0.1:{server.config.port}", connections
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_page_asks_for_the_token_and_shows_oee_and_downtime_escaped(
        stand_in: tuple[str, list[dict[str, str]]], chromium: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    base, connections = stand_in
    driver: WebDriver = chromium  # type: ignore[assignment]
    wait = WebDriverWait(driver, 15, poll_frequency=0.1)

    def text(selector: str) -> str:
        return str(driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector))

    driver.get(base + "/")
    form = wait.until(lambda d: (f := d.find_element(By.ID, "token-form")).is_displayed() and f)
    form.find_element(By.ID, "token").send_keys(READ)
    form.find_element(By.CSS_SELECTOR, "button").click()

    # the tag with an HTML-looking name is shown as text, not parsed
    wait.until(lambda _: text("#tags tr[data-tag] td:nth-child(3)") == HOSTILE)
    # the shift's OEE per machine, with its three bars
    wait.until(lambda _: "71.3" in text('#oee [data-equipment="M1"]'))
    widths = driver.execute_script(
        "return [...document.querySelectorAll('#oee .bar > span')].map(s => s.style.width);")
    assert widths == ["90%", "80%", "99%"]
    # downtime events arrive, and after the server closed the socket the page came back with since=<last id>
    wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, "#downtime li")) == 2)
    assert HOSTILE in text("#downtime li")
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0
    assert driver.execute_script("return window.injected === undefined")
    assert connections[0]["types"] == "downtime" and connections[0]["access_token"] == READ
    assert "since" not in connections[0] and connections[1]["since"] == "1"
    assert driver.execute_script("return sessionStorage.getItem('ingestor.readToken')") == READ
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "operator-page-oee-downtime.png"))

    # the one expected console error is the first request's 401, which made the page ask for the token
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert not severe, severe
