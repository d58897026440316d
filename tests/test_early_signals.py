"""A signal that arrives before the agent phase still ends the run with its code, recorded."""

import os
import signal

import pytest

from tasty_oneshot import runner
from tasty_oneshot.ledger.sqlite import SqliteLedger


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_the_slot_check_is_recorded_as_interrupted(
    tmp_path, monkeypatch, signum, code
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASTY_ONESHOT_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "jobs.yaml").write_text(
        "model: test\nmcp:\n  command: /bin/false\njobs:\n  check:\n"
        '    instructions: Check\n    schedule: "9:30am"\n    daily: true\n'
    )
    real_check_slot = runner.check_slot

    def check_slot_then_signal(*args):
        os.kill(os.getpid(), signum)  # delivered before this returns
        return real_check_slot(*args)

    monkeypatch.setattr(runner, "check_slot", check_slot_then_signal)
    # Whatever this worker inherited (a CI runner or nohup may ignore SIGINT), the run starts
    # as a timer would start it: SIGINT raises KeyboardInterrupt, SIGTERM has its default.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        request = runner.RunRequest(job="check", config="jobs.yaml", scheduled=True)
        assert runner.run(request) == code
        # The run puts back the handlers it found.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ledger = SqliteLedger(tmp_path / "state")
    [row] = ledger.runs()
    ledger.close()
    assert row["status"] == "interrupted" and row["exit_code"] == code
