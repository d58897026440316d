"""Run a TastyTrade LLM agent once per OS timer firing."""

import os as _os

__version__ = "0.1.0"

# A run resumed after waiting for a place (see waiter.py) may be stopped while it starts
# again: from the first moment, a stop is remembered here, and recorded once the run can.
WAITING_ENV = "TASTY_ONESHOT_WAITING"  # set (by waiter.py) in a run that resumes a wait
early_signals: list[int] = []
if WAITING_ENV in _os.environ:
    import signal as _signal

    for _sig in (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT):
        _signal.signal(_sig, lambda signum, frame: early_signals.append(signum))
