"""A PostgreSQL URL read the way libpq reads it, to find its passwords without psycopg.

libpq does not read a URL as `urllib` does: the user part ends at the first `@` (or `/`),
so a password may hold `#`, `?` or `:` unencoded; a `#` is no fragment; the query starts at
the first `?` after the user part, and its `password=` and `sslpassword=` are passwords too.
Each value is percent-decoded. This module is light (no psycopg): a skip that never
connects still needs the URL without its password, for its messages and the spool.

A URL that libpq would misread (a `/` or `@` left unencoded in the password) fails to
connect; its text up to the last `@` before the query is treated as credentials all the same,
so no part of it shows in a message.
"""

from urllib.parse import unquote

SCHEMES = ("postgresql://", "postgres://")
SECRET_KEYS = ("password", "sslpassword")
MIN_PIECE = 6  # pieces of a misread password this long are hidden on their own too


class PostgresUrl:
    """The parts of a URL that matter for hiding its passwords."""

    def __init__(self, url: str) -> None:
        scheme = next((s for s in SCHEMES if url.startswith(s)), "")
        rest = url[len(scheme) :]
        self.scheme = scheme
        # The user part, as libpq finds it: up to the first `@`, unless a `/` comes first.
        ends = [i for i in (rest.find("@"), rest.find("/")) if i >= 0]
        end = min(ends, default=-1)
        self.libpq_userinfo = rest[:end] if end >= 0 and rest[end] == "@" else None
        after = rest if self.libpq_userinfo is None else rest[end + 1 :]
        host_and_path, mark, query = after.partition("?")
        userinfo = self.libpq_userinfo
        if "@" in host_and_path:
            # Misread by libpq: the credentials run to the last `@` before the query.
            more, _, host_and_path = host_and_path.rpartition("@")
            userinfo = more if userinfo is None else f"{userinfo}@{more}"
        self.userinfo = userinfo
        self.host_and_path = host_and_path
        self.query = query if mark else None

    def user(self) -> str:
        return (self.userinfo or "").partition(":")[0]

    def passwords(self) -> list[str]:
        """Every password the URL carries, as written."""
        found = [
            userinfo.partition(":")[2]
            for userinfo in (self.libpq_userinfo, self.userinfo)
            if userinfo is not None and ":" in userinfo
        ]
        found += [item.partition("=")[2] for item in self._params() if _secret(item)]
        return found

    def shown(self) -> str:
        """The URL without its passwords, as messages and the spool name the ledger."""
        user = self.user()
        text = self.scheme + (f"{user}@" if user else "") + self.host_and_path
        kept = [item for item in self._params() if not _secret(item)]
        return text + ("?" + "&".join(kept) if kept else "")

    def _params(self) -> list[str]:
        """The query's `key=value` items, as written."""
        return [] if self.query is None else self.query.split("&")


def _secret(item: str) -> bool:
    """Whether a query item (`key=value`) is a password."""
    return unquote(item.partition("=")[0]) in SECRET_KEYS


def shown_url(url: str) -> str:
    """The URL without its passwords (in the user part or the query)."""
    return PostgresUrl(url).shown()


def url_passwords(url: str) -> list[str]:
    """The passwords a URL carries, as written and as decoded, with the pieces of a password
    libpq would misread (what its error message might quote)."""
    parsed = PostgresUrl(url)
    forms: list[str] = []
    for value in parsed.passwords():
        forms += [value, unquote(value)]
        pieces = value.replace("@", "/").replace(":", "/").split("/")
        forms += [piece for piece in pieces if len(piece) >= MIN_PIECE]
    return [form for form in dict.fromkeys(forms) if form]
