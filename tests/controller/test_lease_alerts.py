"""Two controllers never both act; alerts reach webhooks without blocking the loop."""

from __future__ import annotations

import http.server
import json
import threading
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from evertrain.controller.alerts import Alerts
from evertrain.controller.clock import ManualClock
from evertrain.controller.lease import Lease
from evertrain.spec import Webhook
from evertrain.store import Store


def test_only_one_holder_until_the_lease_expires(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    store = Store.for_project(tmp_path, clock=clock).open()
    a = Lease(store.db, "controller/m", "a", ttl=60, clock=clock)
    b = Lease(store.db, "controller/m", "b", ttl=60, clock=clock)
    assert a.acquire() and a.token == 1
    assert not b.acquire()
    clock.advance(30)
    assert a.acquire()  # renewal keeps the token
    assert a.token == 1
    clock.advance(61)
    assert b.acquire() and b.token == 2  # expired: b takes over with a new fencing token
    assert not a.acquire()
    b.release()
    assert a.acquire()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: typing.ClassVar[list[dict[str, object]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        type(self).received.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    _Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_alerts_are_retried_with_backoff_and_filtered_by_event(hook_url: str) -> None:
    _Hook.fail_first = 2
    waits: list[float] = []
    alerts = Alerts([Webhook(url=hook_url, events=["rollback", "promotion"], retries=3)], sleep=waits.append)
    alerts.emit("drift", {"model": "m"})  # not subscribed
    alerts.emit("rollback", {"model": "m", "version": 3, "reasons": ["worse"]})
    alerts.flush()
    assert _Hook.received == [{"event": "rollback", "model": "m", "version": 3, "reasons": ["worse"]}]
    assert waits == [0.5, 1.0]  # two failures, backoff doubling
    assert alerts.sent == 1 and alerts.failed == 0


def test_a_dead_webhook_never_blocks_and_is_given_up() -> None:
    alerts = Alerts([Webhook(url="http://127.0.0.1:9/nothing-listens", retries=2)], sleep=lambda _s: None)
    alerts.emit("decision", {"model": "m"})  # returns at once
    alerts.flush()
    assert alerts.failed == 1 and alerts.sent == 0
