"""Pushing escalation alerts out as they are raised: the log, stdout, and an optional webhook.

The webhook (Slack, Teams or a CRM endpoint) gets one JSON POST per alert from a background
thread, retried with backoff on network errors and 5xx answers, so a slow or dead endpoint never
delays the analysis. Every alert is also stored with the call; the push is the fast path.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request

log = logging.getLogger(__name__)


class AlertPublisher:
    def __init__(self, webhook_url: str = "", retries: int = 3, timeout_s: float = 5.0,
                 backoff_s: float = 0.5, stdout: bool = True):
        self.webhook_url, self.retries, self.timeout_s, self.backoff_s = webhook_url, retries, timeout_s, backoff_s
        self.stdout = stdout
        self.sent = self.failed = 0
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if webhook_url:
            self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
            self._thread.start()

    def publish(self, alert: dict) -> None:
        """`alert`: call_id, speaker, role, t_s, score, factors, kind, text, agent_id, customer_id."""
        if self.stdout:  # one line per alert on the console: the ALERT line, or the log when it is off
            log.info("escalation alert", extra={"alert": alert})
            print("ALERT " + json.dumps(alert, default=str), flush=True)
        else:
            log.warning("escalation alert", extra={"alert": alert})
        if self._thread:
            self._queue.put(alert)

    def close(self, wait_s: float = 10.0) -> None:
        if self._thread:
            self._queue.put(None)
            self._thread.join(wait_s)

    def _run(self) -> None:
        while (alert := self._queue.get()) is not None:
            if self._post(alert):
                self.sent += 1
            else:
                self.failed += 1
                log.error("alert webhook gave up", extra={"url": self.webhook_url, "call_id": alert.get("call_id"),
                                                          "attempts": self.retries + 1})

    def _post(self, alert: dict) -> bool:
        body = json.dumps(alert, default=str).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.webhook_url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if response.status < 300:
                        return True
                    error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if 400 <= exc.code < 500 and exc.code != 429:
                    log.error("alert webhook refused the alert", extra={"url": self.webhook_url, "error": error})
                    return False  # the endpoint said no: retrying will not change its mind
            except (urllib.error.URLError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
            log.warning("alert webhook failed, retrying", extra={"url": self.webhook_url, "error": error,
                                                                 "attempt": attempt + 1})
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        return False
