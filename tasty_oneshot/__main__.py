"""The `tasty-oneshot` command, and `python -m tasty_oneshot`: the CLI in a process of its own."""

import gc


def main() -> None:
    # Most invocations are short (a skip, a lock refusal, a preview), and collecting cycles
    # while they import costs a skip a tenth of its time. Off from before the first import;
    # a run that starts the agent turns it back on (agent_phase.enter).
    gc.disable()
    from tasty_oneshot.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
