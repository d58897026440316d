"""A fake TastyTrade HTTP API on 127.0.0.1, for the real tasty-agent server and the real SDK.

It answers what tasty-agent's tools ask of the tastytrade SDK, with the JSON shapes the SDK's
models parse: the OAuth token, the customer's accounts, balances, positions, transactions,
orders (live, history, placed and dry run), market sessions and holidays, symbol search,
watchlists, market metrics, equities, and a quote token whose DXLink URL is a small fake
streamer on the same port (a WebSocket at /dxlink that sends one quote per subscribed symbol).

Every request is recorded (`requests`, `paths()`); `fail(path, status, ...)` makes a path
answer an error; the token endpoint refuses any client secret or refresh token but the ones
it was given (401 with TastyTrade's OAuth error body).

    api = FakeTastytradeApi()          # serving, in a thread
    api.url                            # http://127.0.0.1:PORT
    api.fail("/accounts/5WT00001/positions", 500)
    api.close()

Run as a script (`python fake_tastytrade_api.py PORTFILE`) it serves until killed and writes
its port to PORTFILE once ready.
"""

import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ACCOUNT = "5WT00001"
CLIENT_SECRET = "fake-client-secret"
REFRESH_TOKEN = "fake-refresh-token"
ACCESS_TOKEN = "fake-access-token"
NET_LIQ = "123456.78"
CASH = "4321.09"
POSITION = "SPY"
QUOTE = ("SPY", "500.10", "500.20")  # symbol, bid, ask
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_T0 = "2026-12-01T14:30:00.000+00:00"


def _zeros(*names: str) -> dict[str, str]:
    return {name: "0.0" for name in names}


def balances(account: str) -> dict[str, Any]:
    return {
        "account-number": account,
        "cash-balance": CASH,
        "net-liquidating-value": NET_LIQ,
        "equity-buying-power": "8642.18",
        "derivative-buying-power": "4321.09",
        "day-trading-buying-power": "0.0",
        "available-trading-funds": "0.0",
        "maintenance-requirement": "1000.0",
        "maintenance-excess": "3321.09",
        "cash-available-to-withdraw": CASH,
        **_zeros(
            "long-equity-value",
            "short-equity-value",
            "long-derivative-value",
            "short-derivative-value",
            "long-futures-value",
            "short-futures-value",
            "long-futures-derivative-value",
            "short-futures-derivative-value",
            "long-margineable-value",
            "short-margineable-value",
            "margin-equity",
            "futures-margin-requirement",
            "maintenance-call-value",
            "reg-t-call-value",
            "day-trading-call-value",
            "day-equity-call-value",
            "day-trade-excess",
            "pending-cash",
            "long-cryptocurrency-value",
            "short-cryptocurrency-value",
            "cryptocurrency-margin-requirement",
            "unsettled-cryptocurrency-fiat-amount",
            "closed-loop-available-balance",
            "equity-offering-margin-requirement",
            "long-bond-value",
            "bond-margin-requirement",
            "used-derivative-buying-power",
            "reg-t-margin-requirement",
            "futures-overnight-margin-requirement",
            "futures-intraday-margin-requirement",
            "pending-margin-interest",
            "effective-cryptocurrency-buying-power",
        ),
        "snapshot-date": "2026-12-01",
        "updated-at": _T0,
    }


def account(number: str) -> dict[str, Any]:
    return {
        "account-number": number,
        "opened-at": _T0,
        "nickname": "Individual",
        "account-type-name": "Individual",
        "is-closed": False,
        "day-trader-status": False,
        "is-firm-error": False,
        "is-firm-proprietary": False,
        "is-futures-approved": False,
        "is-test-drive": False,
        "margin-or-cash": "Margin",
        "is-foreign": False,
        "created-at": _T0,
    }


def position(account: str) -> dict[str, Any]:
    return {
        "account-number": account,
        "symbol": POSITION,
        "instrument-type": "Equity",
        "underlying-symbol": POSITION,
        "quantity": "10",
        "quantity-direction": "Long",
        "close-price": "499.0",
        "average-open-price": "450.0",
        "mark-price": "500.15",
        "multiplier": "1",
        "cost-effect": "Credit",
        "is-suppressed": False,
        "is-frozen": False,
        "realized-day-gain": "0.0",
        "realized-today": "0.0",
        "created-at": _T0,
        "updated-at": _T0,
    }


def transaction(account: str) -> dict[str, Any]:
    return {
        "id": 1001,
        "account-number": account,
        "transaction-type": "Trade",
        "transaction-sub-type": "Buy to Open",
        "description": f"Bought 10 {POSITION} @ 450.00",
        "executed-at": _T0,
        "transaction-date": "2026-12-01",
        "value": "4500.0",
        "value-effect": "Debit",
        "net-value": "4500.0",
        "net-value-effect": "Debit",
        "is-estimated-fee": False,
        "symbol": POSITION,
        "instrument-type": "Equity",
        "underlying-symbol": POSITION,
        "action": "Buy to Open",
        "quantity": "10",
        "price": "450.0",
    }


def order(account: str, legs: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "account-number": account,
        "time-in-force": body.get("time-in-force", "Day"),
        "order-type": body.get("order-type", "Limit"),
        "underlying-symbol": legs[0]["symbol"] if legs else POSITION,
        "underlying-instrument-type": "Equity",
        "status": "Received",
        "cancellable": True,
        "editable": True,
        "edited": False,
        "updated-at": _T0,
        "size": "1",
        "price": body.get("price", "500.15"),
        "price-effect": body.get("price-effect", "Debit"),
        "legs": [
            {
                "instrument-type": leg.get("instrument-type", "Equity"),
                "symbol": leg["symbol"],
                "action": leg["action"],
                "quantity": leg.get("quantity", "1"),
                "remaining-quantity": leg.get("quantity", "1"),
                "fills": [],
            }
            for leg in legs
        ],
    }


def order_response(placed: dict[str, Any]) -> dict[str, Any]:
    return {
        "order": placed,
        "buying-power-effect": {
            "change-in-margin-requirement": "250.08",
            "change-in-margin-requirement-effect": "Debit",
            "change-in-buying-power": "250.08",
            "change-in-buying-power-effect": "Debit",
            "current-buying-power": "8642.18",
            "current-buying-power-effect": "Credit",
            "new-buying-power": "8392.10",
            "new-buying-power-effect": "Credit",
            "isolated-order-margin-requirement": "250.08",
            "isolated-order-margin-requirement-effect": "Debit",
            "is-spread": False,
            "impact": "250.08",
            "effect": "Debit",
        },
        "fee-calculation": {
            "regulatory-fees": "0.0",
            "clearing-fees": "0.0",
            "commission": "0.0",
            "proprietary-index-option-fees": "0.0",
            "total-fees": "0.0",
        },
        "warnings": [],
    }


def equity(symbol: str) -> dict[str, Any]:
    return {
        "id": 1,
        "symbol": symbol,
        "instrument-type": "Equity",
        "is-index": False,
        "description": f"{symbol} test equity",
        "lendability": "Easy To Borrow",
        "market-time-instrument-collection": "Equity",
        "is-closing-only": False,
        "is-options-closing-only": False,
        "active": True,
        "is-illiquid": False,
        "is-etf": True,
        "streamer-symbol": symbol,
        "is-fractional-quantity-eligible": True,
        "tick-sizes": [{"value": "0.0001", "threshold": "1.0"}, {"value": "0.01"}],
        "option-tick-sizes": [{"value": "0.01"}],
    }


def market_session() -> dict[str, Any]:
    today = datetime.now(UTC).date()
    at = lambda d, hh, mm: datetime(d.year, d.month, d.day, hh, mm, tzinfo=UTC).isoformat()  # noqa: E731
    nxt = today + timedelta(days=1)
    return {
        "instrument-collection": "Equity",
        "state": "Open",
        "open-at": at(today, 14, 30),
        "close-at": at(today, 21, 0),
        "start-at": at(today, 13, 0),
        "next-session": {
            "instrument-collection": "Equity",
            "open-at": at(nxt, 14, 30),
            "close-at": at(nxt, 21, 0),
            "session-date": nxt.isoformat(),
            "start-at": at(nxt, 13, 0),
        },
    }


def market_metric(symbol: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "implied-volatility-index": "0.1523",
        "implied-volatility-index-rank": "0.31",
        "implied-volatility-percentile": "0.42",
        "liquidity-rating": 4,
        "beta": "1.0",
        "market-cap": "500000000000",
        "updated-at": _T0,
    }


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class FakeTastytradeApi:
    """The fake API, serving in a thread from construction until `close()`."""

    def __init__(self, accounts: tuple[str, ...] = (ACCOUNT,)) -> None:
        self.accounts = list(accounts)
        self.client_secret, self.refresh_token = CLIENT_SECRET, REFRESH_TOKEN
        self.requests: list[dict[str, Any]] = []
        self.faults: dict[str, tuple[int, Any]] = {}
        self.drops: dict[str, int] = {}
        self.changed = threading.Condition()
        api = self

        class Handler(_Handler):
            owner = api

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        """Forget the requests and faults (one module's server, test after test)."""
        with self.changed:
            self.requests.clear()
            self.faults.clear()
            self.drops.clear()
        self.client_secret, self.refresh_token = CLIENT_SECRET, REFRESH_TOKEN

    def fail(self, path: str, status: int, body: Any = None) -> None:
        """Answer `status` (and `body`, else TastyTrade's error shape) to every request for
        `path` (the path without its query)."""
        self.faults[path] = (status, body or error_body("fake_failure", f"fake {status}"))

    def drop(self, path: str, times: int = 1) -> None:
        """Reset the connection of the next `times` requests for `path`, answering nothing
        (a network that fails under the SDK)."""
        self.drops[path] = times

    def dropping(self, path: str) -> bool:
        with self.changed:
            if self.drops.get(path, 0) <= 0:
                return False
            self.drops[path] -= 1
            return True

    def paths(self, method: str | None = None) -> list[str]:
        return [r["path"] for r in self.requests if method is None or r["method"] == method]

    def wait_for(self, test: Callable[[list[dict[str, Any]]], bool], timeout: float = 30) -> bool:
        """Until `test(requests)` holds (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not test(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def record(self, request: dict[str, Any]) -> None:
        with self.changed:
            self.requests.append(request)
            self.changed.notify_all()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the routes -------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        """(status, JSON body) for one request."""
        if path in self.faults:
            return self.faults[path]
        if method == "POST" and path == "/oauth/token":
            good = isinstance(body, dict) and (
                body.get("client_secret") == self.client_secret
                and body.get("refresh_token") == self.refresh_token
            )
            if not good:
                return 401, {"error_code": "invalid_grant", "error_description": "Grant revoked"}
            return 200, {"access_token": ACCESS_TOKEN, "expires_in": 900, "token_type": "Bearer"}
        if method == "GET" and path == "/customers/me/accounts":
            items = [{"account": account(n), "authority-level": "owner"} for n in self.accounts]
            return 200, {"data": {"items": items}}
        parts = path.strip("/").split("/")
        if parts[0] == "accounts" and len(parts) >= 3:
            return self.account_route(method, parts[1], parts[2:], body)
        if method == "GET" and path == "/market-time/sessions/current":
            return 200, {"data": {"items": [market_session()]}}
        if method == "GET" and path == "/market-time/equities/holidays":
            return 200, {"data": {"market-half-days": [], "market-holidays": ["2026-12-25"]}}
        if method == "GET" and parts[:2] == ["symbols", "search"] and len(parts) == 3:
            found = unquote(parts[2]).upper()
            return 200, {"data": {"items": [{"symbol": found, "description": f"{found} Trust"}]}}
        if method == "GET" and path == "/watchlists":
            entries = [{"symbol": POSITION, "instrument-type": "Equity"}]
            return 200, {"data": {"items": [{"name": "main", "watchlist-entries": entries}]}}
        if method == "GET" and path == "/public-watchlists":
            return 200, {"data": {"items": [{"name": "Popular", "watchlist-entries": []}]}}
        if method == "GET" and path == "/market-metrics":
            symbols = ",".join(query.get("symbols", [])).split(",")
            return 200, {"data": {"items": [market_metric(s) for s in symbols if s]}}
        if method == "GET" and parts[:2] == ["instruments", "equities"] and len(parts) == 3:
            return 200, {"data": equity(unquote(parts[2]).upper())}
        if method == "GET" and path == "/api-quote-tokens":
            dxlink = f"ws://127.0.0.1:{self.port}/dxlink"
            return 200, {"data": {"token": "fake-quote-token", "dxlink-url": dxlink}}
        return 404, error_body("not_found", f"no route {method} {path}")

    def account_route(self, method: str, number: str, rest: list[str], body: Any) -> Any:
        if number not in self.accounts:
            return 404, error_body("record_not_found", f"account {number} not found")
        if method == "GET" and rest == ["balances", "USD"]:
            return 200, {"data": balances(number)}
        if method == "GET" and rest == ["positions"]:
            return 200, {"data": {"items": [position(number)]}}
        if method == "GET" and rest == ["transactions"]:
            page = {"page-offset": 0, "total-pages": 1}
            return 200, {"data": {"items": [transaction(number)]}, "pagination": page}
        if method == "GET" and rest == ["orders", "live"]:
            return 200, {"data": {"items": []}}
        if method == "GET" and rest == ["orders"]:
            page = {"page-offset": 0, "total-pages": 1}
            return 200, {"data": {"items": []}, "pagination": page}
        if method == "POST" and rest in (["orders"], ["orders", "dry-run"]):
            legs = body.get("legs", []) if isinstance(body, dict) else []
            placed = order(number, legs, body if isinstance(body, dict) else {})
            if rest == ["orders"]:
                placed["id"] = 9001
            return 201, {"data": order_response(placed)}
        return 404, error_body("not_found", f"no route {method} /accounts/{number}/...")


class _Handler(BaseHTTPRequestHandler):
    owner: FakeTastytradeApi
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        query = parse_qs(split.query)
        self.owner.record(
            {
                "method": method,
                "path": split.path,
                "query": query,
                "body": body,
                "authorization": self.headers.get("Authorization"),
            }
        )
        if self.owner.dropping(split.path):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if split.path == "/dxlink" and self.headers.get("Upgrade", "").lower() == "websocket":
            _DXLink(self).serve()
            return
        status, answer = self.owner.answer(method, split.path, query, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _DXLink:
    """The DXLink streamer, as far as the SDK's DXLinkStreamer needs: set up, authorise, open
    channels, and answer a subscription with one quote (FULL format) for each symbol."""

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler

    def serve(self) -> None:
        key = self.handler.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.handler.send_response(101)
        self.handler.send_header("Upgrade", "websocket")
        self.handler.send_header("Connection", "Upgrade")
        self.handler.send_header("Sec-WebSocket-Accept", accept)
        self.handler.end_headers()
        self.handler.wfile.flush()
        self.handler.close_connection = True
        while (message := self.receive()) is not None:
            for reply in self.replies(message):
                self.send(reply)

    def replies(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        kind, channel = message.get("type"), message.get("channel", 0)
        if kind == "SETUP":
            return [
                {"type": "SETUP", "channel": 0, "version": "fake", "keepaliveTimeout": 60},
                {"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"},
            ]
        if kind == "AUTH":
            return [{"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED"}]
        if kind == "CHANNEL_REQUEST":
            return [{"type": "CHANNEL_OPENED", "channel": channel, "service": "FEED"}]
        if kind == "FEED_SUBSCRIPTION":
            events = [self.quote(s["symbol"]) for s in message.get("add", [])]
            return [{"type": "FEED_DATA", "channel": channel, "data": events}] if events else []
        return []

    @staticmethod
    def quote(symbol: str) -> dict[str, Any]:
        bid, ask = (QUOTE[1], QUOTE[2]) if symbol == QUOTE[0] else ("10.00", "10.10")
        return {
            "eventType": "Quote",
            "eventSymbol": symbol,
            "eventTime": 0,
            "sequence": 0,
            "timeNanoPart": 0,
            "bidTime": 0,
            "bidExchangeCode": "Q",
            "askTime": 0,
            "askExchangeCode": "Q",
            "bidPrice": float(bid),
            "askPrice": float(ask),
            "bidSize": 100,
            "askSize": 100,
        }

    def receive(self) -> dict[str, Any] | None:
        """The next text message from the client (None once it closes)."""
        read = self.handler.rfile.read
        while True:
            head = read(2)
            if len(head) < 2:
                return None
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", read(8))[0]
            mask = read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read(length)))
            if opcode == 0x8:  # close
                return None
            if opcode == 0x1:
                return json.loads(payload)

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        if len(data) < 126:
            head = struct.pack("!BB", 0x81, len(data))
        else:
            head = struct.pack("!BBH", 0x81, 126, len(data))
        try:
            self.handler.wfile.write(head + data)
            self.handler.wfile.flush()
        except OSError:
            pass


def main() -> None:
    api = FakeTastytradeApi()
    port_file = Path(sys.argv[1])
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(api.port))
    tmp.replace(port_file)
    threading.Event().wait()


if __name__ == "__main__":
    main()
