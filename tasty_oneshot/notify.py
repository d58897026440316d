"""Alerts that reach a person, through Apprise (ntfy, Telegram, Slack, e-mail, ...).

A delivery never fails a run and never holds it up for long: it runs in a daemon thread and
is given up after DELIVERY_TIMEOUT seconds; what became of it is logged and recorded.
"""

import contextlib
import logging
import threading
from pathlib import Path

from tasty_oneshot import paths
from tasty_oneshot.errors import UsageError, one_line
from tasty_oneshot.secrets import redact

log = logging.getLogger("tasty_oneshot")

DELIVERY_TIMEOUT = 5.0  # seconds before a delivery is given up
BODY_LIMIT = 4000  # characters of output sent in one alert


def send(urls: tuple[str, ...], title: str, body: str, timeout: float = DELIVERY_TIMEOUT) -> str:
    """Send to every URL; return what happened in a few words ("sent", "not sent: ..."), worded
    so that a note in the ledger cannot be misread. Never raises."""
    result: dict[str, object] = {}
    try:
        # Imported here, not in the timed thread: the bound is on the network, and a loaded
        # host can take seconds to import apprise.
        import apprise
    except Exception as exc:
        return f"not sent: {one_line(exc)}"

    def deliver() -> None:
        try:
            apobj = apprise.Apprise()
            for url in urls:
                service = apprise.Apprise.instantiate(url)
                if service is None:
                    continue
                # Apprise's worker threads are joined when the process exits: cap each
                # socket wait, or a hung service would hold the exit past our timeout.
                service.socket_connect_timeout = min(service.socket_connect_timeout, timeout / 2)
                service.socket_read_timeout = min(service.socket_read_timeout, timeout / 2)
                apobj.add(service)
            # An alert goes to a third party: no secret the model or an error let slip.
            text = redact(body)[:BODY_LIMIT] or "(empty)"
            result["ok"] = apobj.notify(title=redact(title), body=text)
        except Exception as exc:  # a broken service must not break the run
            result["error"] = one_line(exc)

    worker = threading.Thread(target=deliver, name="notify", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        outcome = f"not sent: gave up after {timeout:g}s"
    elif "error" in result:
        outcome = f"not sent: {result['error']}"
    elif result.get("ok"):
        outcome = "sent"
    else:
        outcome = "not sent: not delivered to every URL"
    level = logging.INFO if outcome == "sent" else logging.WARNING
    log.log(level, "notify (%d URL%s): %s", len(urls), "" if len(urls) == 1 else "s", outcome)
    return outcome


# Which outcome statuses each `notify_on` event covers.
EVENTS = {
    "output": ("ok",),
    "failure": ("failed", "timeout", "interrupted"),
    "skip": ("skipped", "locked"),
}


def notify_outcome(
    urls: tuple[str, ...], notify_on: tuple[str, ...], job: str, status: str, text: str
) -> str | None:
    """The run's own alert, when `notify_on` asks for this outcome; None when it does not.
    What became of it, for the ledger: "failure alert: sent", never "failed: sent"."""
    events = [event for event in notify_on if status in EVENTS[event]]
    if not urls or not events:
        return None
    title = f"tasty-oneshot {job}: {'output' if status == 'ok' else status}"
    return f"{events[0]} alert: {send(urls, title, text)}"


CHECKED = "notify-urls.checked"  # in the state directory: SHA-256 of each URL apprise accepted
CHECKED_LIMIT = 64 << 10


def check_urls(sources: list[tuple[str, tuple[str, ...]]], state: Path | None) -> None:
    """Let apprise itself judge each URL (it knows every service's URL form): a malformed one
    is exit 2 naming the file, the job and the key. `sources` pairs where URLs come from (an
    error prefix; empty for the command line) with the URLs. With `state`, a URL apprise
    accepted once is remembered by its SHA-256 (never the URL: it may hold a password), so a
    run that only skips does not import apprise again; a wrong stamp could only skip this
    early check, never decide what runs."""
    urls = [(where, i, url) for where, group in sources for i, url in enumerate(group)]
    if not urls:
        return
    import hashlib

    def digest(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    stamp = state / CHECKED if state is not None else None
    known = set(((paths.read_private(stamp, CHECKED_LIMIT) or b"") if stamp else b"").split())
    unchecked = [(where, i, url) for where, i, url in urls if digest(url).encode() not in known]
    if not unchecked:
        return
    import apprise

    from tasty_oneshot.jobs import label

    for where, index, url in unchecked:
        if not apprise.Apprise().add(url):
            service = url.split("://", 1)[0][:20]
            raise UsageError(
                f"{label(where, 'notify')}: item {index + 1} ({service}://...) is not a "
                "valid Apprise URL"
            )
    if stamp is not None:
        lines = [line.decode() for line in known] + [digest(url) for _, _, url in unchecked]
        with contextlib.suppress(OSError):  # then the check runs again: slower, never wrong
            paths.write_private(stamp, "\n".join(lines[-1000:]) + "\n")
