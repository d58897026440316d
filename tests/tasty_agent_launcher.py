"""Start the real tasty-agent MCP server (its own main, from the installed package) with the
tastytrade SDK's API URL pointed somewhere else, such as tests/fake_tastytrade_api.py.

    python tasty_agent_launcher.py API_URL [stdio]

The URL is an argument because a stdio MCP server gets only HOME, PATH and TASTYTRADE_*
from tasty-oneshot. Nothing of tasty-agent is changed: the SDK's URL constant is set before
the server is imported, as the SDK reads it when it builds its HTTP client.
"""

import sys


def main() -> None:
    api_url, *rest = sys.argv[1:]
    import tastytrade
    import tastytrade.session

    tastytrade.API_URL = tastytrade.session.API_URL = api_url.rstrip("/")
    from tasty_agent.server import main as serve  # type: ignore[import-untyped]

    sys.argv = [sys.argv[0], *(rest or ["stdio"])]
    serve()


if __name__ == "__main__":
    main()
