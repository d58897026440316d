"""Dead-man's-switch pings, in the healthchecks.io protocol.

A run that starts the agent sends URL/start?rid=RID first and URL/EXIT?rid=RID at the end
(EXIT its exit code), with the reason or the output's tail as a body of at most 10 kB,
masked. A market-closed skip sends URL (a success: holidays are not outages); a lock refusal
sends URL/log; a skip by the slot guard sends nothing. RID is a UUID per invocation.

Each ping gives up after PING_TIMEOUT seconds, in a daemon thread, and never changes the
run's outcome. Plain urllib: no HTTP client to import on the skip path.
"""

import logging
import os
import threading

from tasty_oneshot.errors import one_line
from tasty_oneshot.secrets import redact

log = logging.getLogger("tasty_oneshot")

PING_TIMEOUT = 5.0  # seconds before a ping is given up
BODY_LIMIT = 10_000  # bytes of body, from the end of the text


class Pinger:
    """The pings of one invocation (all with the same rid)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.rid = _uuid4()

    def start(self) -> None:
        self._send("/start", "")

    def exit(self, code: int, text: str) -> None:
        self._send(f"/{code}", text)

    def success(self, text: str) -> None:
        self._send("", text)

    def log(self, text: str) -> None:
        self._send("/log", text)

    def _send(self, suffix: str, text: str) -> None:
        """POST to URL+suffix?rid=RID; logs what became of it; never raises."""
        body = (redact(text) or "").encode()[-BODY_LIMIT:]
        target = f"{self.url}{suffix}?rid={self.rid}"
        outcome: dict[str, str] = {}

        def deliver() -> None:
            try:
                import urllib.request

                request = urllib.request.Request(target, data=body, method="POST")
                request.add_header("Content-Type", "text/plain; charset=utf-8")
                request.add_header("User-Agent", "tasty-oneshot")
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:
                    outcome["status"] = str(response.status)
            except Exception as exc:  # a ping must never break the run
                outcome["error"] = one_line(exc)

        worker = threading.Thread(target=deliver, name="ping", daemon=True)
        worker.start()
        worker.join(PING_TIMEOUT)
        what = f"ping {suffix.lstrip('/') or 'success'}"
        if worker.is_alive():
            log.warning("%s: gave up after %gs", what, PING_TIMEOUT)
        elif "error" in outcome:
            log.warning("%s: failed: %s", what, redact(outcome["error"]))
        else:
            log.info("%s: sent", what)


def _uuid4() -> str:
    """A random UUID (version 4), without importing uuid on the skip path."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
