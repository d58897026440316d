"""What counts as a secret, and what stays readable, in the redaction every channel uses."""

import pytest

from tasty_oneshot import secrets


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.setattr(secrets, "_values", set())


def test_secret_looking_environment_variables_are_hidden_and_others_are_not(monkeypatch):
    monkeypatch.setenv("TASTYTRADE_CLIENT_SECRET", "tt-client-secret-value")
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "sk-provider-key-value")
    monkeypatch.setenv("TASTYTRADE_ACCOUNT_ID", "5WX12345")
    secrets.register_environment()
    text = "tt-client-secret-value sk-provider-key-value 5WX12345"
    assert secrets.redact(text) == "*** *** 5WX12345"


@pytest.mark.parametrize(
    ("url", "hidden", "kept"),
    [
        ("mailto://me:app-password@gmail.com", ["app-password"], ["gmail.com"]),
        ("json://user:S3cret@127.0.0.1:8080/alerts", ["S3cret"], ["127.0.0.1", "alerts"]),
        ("tgram://123456789:AAbbCCddEEff/12345", ["123456789:AAbbCCddEEff"], []),
        ("ntfy://ntfy.sh/my-secret-topic", ["my-secret-topic"], ["ntfy.sh"]),
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", ["TIiajkdnlazkcOXrIdevi7FQ"], []),
    ],
)
def test_apprise_url_credentials_are_hidden_but_host_names_stay_readable(url, hidden, kept):
    secrets.register_urls((url,))
    for value in hidden:
        assert secrets.redact(f"x {value} y") == "x *** y"
    for value in kept:
        assert secrets.redact(f"x {value} y") == f"x {value} y"
    assert secrets.redact(f"sent to {url}") == "sent to ***"


def test_a_secret_containing_another_is_hidden_whole():
    secrets.register("abcdef", "abcdef-longer-secret")
    assert secrets.redact("[abcdef-longer-secret]") == "[***]"


def test_an_exception_in_a_log_line_is_one_line_and_hidden_too():
    import io
    import logging

    secrets.register("sk-in-a-traceback-123")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets.RedactingFilter())
    logger = logging.getLogger("test-secrets-traceback")
    logger.addHandler(handler)
    try:
        raise RuntimeError("bad key sk-in-a-traceback-123")
    except RuntimeError:
        logger.exception("library said")
    logger.removeHandler(handler)
    text = stream.getvalue()
    # One line, no traceback: the exception's own line, masked.
    assert text.splitlines() == ["library said: RuntimeError: bad key ***"]


def test_a_percent_encoded_password_is_hidden_as_written_and_as_meant():
    secrets.register_urls(("mailto://me:p%40ssw0rd%21@example.com",))
    assert secrets.redact("login p@ssw0rd! refused") == "login *** refused"
    assert secrets.redact("login p%40ssw0rd%21 refused") == "login *** refused"


def test_a_user_name_is_not_a_secret():
    # Only passwords and tokens are: the user name of mailto://user:...@ must not turn every
    # "user" in the log into ***.
    secrets.register_urls(("mailto://user:app-password-123@gmail.com",))
    assert secrets.redact("the user ran the job") == "the user ran the job"
    assert secrets.redact("password app-password-123") == "password ***"


def test_a_log_line_that_itself_holds_a_secret_is_hidden():
    import io
    import logging

    secrets.register("sk-in-a-message-456")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets.RedactingFilter())
    logger = logging.getLogger("test-secrets-message")
    logger.addHandler(handler)
    try:
        logger.warning("key %s refused by %s", "sk-in-a-message-456", "the provider")
        logger.warning("inline sk-in-a-message-456 too")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "key *** refused by the provider",
        "inline *** too",
    ]
