"""Webhook alerts: a JSON body per event, retried with backoff, never blocking the loop.

Events go on a queue that one background thread drains; a webhook that keeps failing
is given up after its retries and counted, and the loop never waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import httpx

from evertrain.spec import Webhook
from evertrain.store.redact import mask_url
from evertrain.store.retry import Retry

log = logging.getLogger(__name__)
BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time
BACKOFF_MAX = 30.0
TIMEOUT = 5.0


class _TryAgain(Exception):
    """A webhook answered a status worth retrying: a server error, or 429 (too many requests)."""


class Alerts:
    def __init__(self, webhooks: list[Webhook], *, sleep: Any = time.sleep) -> None:
        self.webhooks = list(webhooks)
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue[tuple[Webhook, dict[str, Any]] | None] = queue.Queue()
        self._sleep = sleep
        self._thread: threading.Thread | None = None

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Queue ``payload`` for every webhook that wants ``event``; returns at once."""
        body = {"event": event, **payload}
        for hook in self.webhooks:
            if event in hook.events:
                self._ensure_thread()
                self._queue.put((hook, body))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._drain, name="evertrain-alerts", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        with httpx.Client(timeout=TIMEOUT) as client:
            while True:
                item = self._queue.get()
                if item is None:
                    self._queue.task_done()
                    return
                hook, body = item
                self._deliver(client, hook, body)
                self._queue.task_done()

    def _deliver(self, client: httpx.Client, hook: Webhook, body: dict[str, Any]) -> None:
        tries = 0

        def post() -> None:
            nonlocal tries
            tries += 1
            try:
                response = client.post(hook.url, json=body)
            except httpx.HTTPError as exc:
                masked = mask_url(hook.url, keep_path=False)
                log.debug(
                    "webhook %s attempt %d failed: %s", masked, tries, str(exc).replace(hook.url, masked)
                )
                raise
            if response.status_code >= 500 or response.status_code == 429:
                log.debug(
                    "webhook %s attempt %d answered %d",
                    mask_url(hook.url, keep_path=False),
                    tries,
                    response.status_code,
                )
                raise _TryAgain(response.status_code)

        policy = Retry(
            attempts=hook.retries + 1,
            base_delay=BACKOFF_BASE,
            max_delay=BACKOFF_MAX,
            retry_on=(httpx.HTTPError, _TryAgain),
            jitter=False,
            sleep=self._sleep,
        )
        try:
            policy.call(post)
        except (httpx.HTTPError, _TryAgain):
            self.failed += 1
            log.warning(
                "webhook %s gave up after %d attempts (event %s)",
                mask_url(hook.url, keep_path=False),
                hook.retries + 1,
                body["event"],
            )
        else:
            self.sent += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until queued alerts are delivered or given up; for shutdown and tests."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
