"""Which outcomes each `notify_on` event covers, as the README documents them."""

import pytest

from tasty_oneshot import notify

STATUSES = ("ok", "failed", "timeout", "interrupted", "skipped", "locked")
COVERS = {
    "output": {"ok"},
    "failure": {"failed", "timeout", "interrupted"},
    "skip": {"skipped", "locked"},
}


@pytest.mark.parametrize("event", sorted(COVERS))
@pytest.mark.parametrize("status", STATUSES)
def test_each_event_covers_exactly_its_documented_outcomes(monkeypatch, event, status):
    sent: list[tuple[str, str]] = []

    def send(urls: tuple[str, ...], title: str, body: str) -> str:
        sent.append((title, body))
        return "sent"

    monkeypatch.setattr(notify, "send", send)
    result = notify.notify_outcome(("json://127.0.0.1/a",), (event,), "job", status, "text")
    if status in COVERS[event]:
        assert result == f"{event} alert: sent"  # never "failed: sent" (a failed delivery?)
        assert sent == [(f"tasty-oneshot job: {'output' if status == 'ok' else status}", "text")]
    else:
        assert result is None and sent == []


def test_without_urls_nothing_is_sent(monkeypatch):
    monkeypatch.setattr(notify, "send", lambda *a: pytest.fail("sent without URLs"))
    assert notify.notify_outcome((), ("failure",), "job", "failed", "text") is None


def test_a_failed_delivery_reads_as_not_sent(monkeypatch):
    """apprise refuses the URL: the note says the alert was not sent, in so many words."""
    result = notify.notify_outcome(("json://127.0.0.1:1/a",), ("failure",), "job", "failed", "x")
    assert result is not None and result.startswith("failure alert: not sent: "), result
