"""Exit codes of the contract, and the one error type that means "nothing ran"."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: a timer may simply try again later
EXIT_TIMEOUT = 124  # as coreutils timeout(1)
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class UsageError(Exception):
    """Bad arguments or configuration: a one-line message, exit 2, nothing has run."""


class StateFault(Exception):
    """A fault of the surroundings (a corrupt or locked ledger, a full disk, an unreachable
    database): a one-line message naming the file and what to do, exit 1."""


def one_line(exc: BaseException) -> str:
    """An exception as one line, looking inside single-exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
