"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

    python openai_stub.py DIR [MODE [ARG]]

Listens on a free port and writes it to DIR/port once it is ready; appends each request body
to DIR/requests.jsonl as one JSON line, with an `arrived` field added (when the request came,
`time.time()`, for benchmarks). The mode is read from DIR/mode.json (a JSON list,
`[MODE, ARG]`) on every request, so a test can change it between runs; MODE and ARG on the
command line write that file first. Modes:

- `loop`: always calls the `account_overview` tool with `{}` (a runaway model);
- `answer TEXT`: answers TEXT at once;
- `status CODE`: answers every request with that HTTP error status (a 429, a 401);
- `notify-if WORD`: when WORD appears anywhere in the request's messages, first calls the
  `notify` tool with a message naming WORD, then answers "alerted"; else answers "nothing to
  report".
- `calls JSON`: JSON is a list of `[TOOL, ARGUMENTS]`; each request that follows one of these
  calls (counting the tool results in the messages) makes the next call, and once all were made
  it answers with every tool result it got, each on its own line after `TOOL: ` (so a test
  sees what reached the model). Calls are made one per request, in order.

Every response reports usage of PROMPT_TOKENS + COMPLETION_TOKENS tokens.
"""

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROMPT_TOKENS = 100
COMPLETION_TOKENS = 20
NOTIFY_MESSAGE = "ALERT: {word} seen"

_ids = itertools.count(1)
_lock = threading.Lock()


def tool_call(name: str, arguments: dict) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{next(_ids)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }


def text(content: str) -> dict:
    return {"role": "assistant", "content": content}


def reply(mode: list, request: dict) -> dict:
    """The assistant message for this request, in this mode."""
    name, arg = mode[0], (mode[1] if len(mode) > 1 else "")
    messages = request.get("messages", [])
    if name == "loop":
        return tool_call("account_overview", {})
    if name == "answer":
        return text(arg)
    if name == "notify-if":
        called = any(
            call["function"]["name"] == "notify"
            for m in messages
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        )
        if called:
            return text("alerted")
        if arg in json.dumps(messages):
            return tool_call("notify", {"message": NOTIFY_MESSAGE.format(word=arg)})
        return text("nothing to report")
    if name == "calls":
        planned = json.loads(arg)
        results = [m for m in messages if m.get("role") == "tool"]
        if len(results) < len(planned):
            tool, arguments = planned[len(results)]
            return tool_call(tool, arguments)
        names = [
            call["function"]["name"]
            for m in messages
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        ]
        return text("\n".join(f"{n}: {_content(r)}" for n, r in zip(names, results, strict=False)))
    raise ValueError(f"unknown mode {name!r}")


def _content(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return " ".join(str(content).split())


class Handler(BaseHTTPRequestHandler):
    directory: Path

    def do_POST(self) -> None:
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        recorded = json.loads(body)
        if isinstance(recorded, dict):
            recorded["arrived"] = arrived
        with _lock, open(self.directory / "requests.jsonl", "ab") as f:
            f.write(json.dumps(recorded).encode() + b"\n")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.send_error(404)
            return
        request = json.loads(body)
        mode = json.loads((self.directory / "mode.json").read_text())
        if mode[0] == "status":
            error = json.dumps({"error": {"message": f"stub error {mode[1]}", "type": "stub"}})
            self.send_response(int(mode[1]))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error.encode())
            return
        message = reply(mode, request)
        response = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "stub"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }
        data = json.dumps(response).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # quiet
        pass


def main() -> None:
    directory = Path(sys.argv[1])
    if len(sys.argv) > 2:
        (directory / "mode.json").write_text(json.dumps(sys.argv[2:]))
    Handler.directory = directory
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = directory / "port.tmp"
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(directory / "port")
    server.serve_forever()


if __name__ == "__main__":
    main()
