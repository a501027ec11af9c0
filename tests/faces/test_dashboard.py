"""The dashboard, loaded in real headless Chromium, shows the champion and the last decision."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from evertrain.faces import ui
from evertrain.serve.app import create_app
from evertrain.spec import load_spec
from evertrain.store import Store

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (make test installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def dashboard(demo_run: tuple[Path, dict[str, Any]]) -> Iterator[tuple[str, Store]]:
    out, _ = demo_run
    store = Store.for_project(out).open()
    app = create_app(store, load_spec(out), admin_token="secret")
    ui.mount(app, store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(timeout=30)
    store.close()


def test_dashboard_shows_champion_and_last_decision(dashboard: tuple[str, Store]) -> None:
    from playwright.sync_api import sync_playwright

    url, store = dashboard
    champion = store.registry.get_alias("demo", "champion")
    last = store.runs.list(model="demo", kind="decision")[-1].result or {}
    with sync_playwright() as pw:  # Playwright gives the browser a fresh temporary profile
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            # The server has an admin token, so the page asks for it (HTTP Basic, any user name).
            context = browser.new_context(http_credentials={"username": "admin", "password": "secret"})
            page = context.new_page()
            page.goto(f"{url}/ui")
            section = page.locator('section[data-model="demo"]')
            assert section.locator('td[data-alias="champion"]').inner_text() == f"v{champion}"
            assert section.locator("#last-decision-demo").inner_text() == last["action"]
            assert "Read-only" in page.content()
            assert section.locator("svg").count() >= 2
        finally:
            browser.close()


def test_dashboard_and_its_actions_need_the_admin_token(dashboard: tuple[str, Store]) -> None:
    url, store = dashboard
    champion = store.registry.get_alias("demo", "champion")
    assert httpx.get(f"{url}/ui/state").status_code == 401  # the audit trail is not for anyone
    assert httpx.get(f"{url}/ui", auth=("admin", "wrong")).status_code == 401
    state = httpx.get(f"{url}/ui/state", headers={"Authorization": "Bearer secret"}).json()
    assert state["models"][0]["aliases"]["champion"] == champion
    refused = httpx.post(f"{url}/admin/models/demo/rollback", json={})
    assert refused.status_code == 401
    assert store.registry.get_alias("demo", "champion") == champion
