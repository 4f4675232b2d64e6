"""A stand-in OpenAI-compatible model that answers after a fixed number of seconds.

`assistant bench api --llm-latency` serves it to measure how many conversations one instance
holds while each waits on a model. A stand-in, not a real model, on purpose: a real model's
latency depends on its load and cannot be held at a chosen figure, and the figure under test is
the service's, not the model's. It answers every `POST .../chat/completions` with the same
cited sentence, as one JSON completion or, when asked to stream, as server-sent events whose
first word arrives after the latency.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "stand-in"
ANSWER = "Open Account settings, choose the option your question is about and follow its steps [1]."
# Its usage, as a real model would report it, so tokens and cost are recorded as usual.
USAGE = {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}


class LatencyModel(ThreadingHTTPServer):
    """The stand-in server. `url` is its base URL (`.../v1`, as OPENAI_BASE_URL takes it);
    `peak` the most requests it has held at once, which is how many conversations the service
    had waiting on it together."""

    daemon_threads = True
    # Two hundred clients connect at once: the default backlog of 5 drops their SYNs, and each
    # dropped one costs a second's retransmission.
    request_queue_size = 1024

    def __init__(self, latency: float):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency = latency
        self.peak = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Counts one request in flight for the block."""
        with self._lock:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server: LatencyModel
    # Keep-alive, as a real model server: the app's client reuses its connections.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Quiet: one line per request would be thousands a minute."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.server.holding():
            time.sleep(self.server.latency)
        if body.get("stream"):
            self._stream(body)
        else:
            self._send(
                "application/json",
                json.dumps(_completion(body.get("model") or MODEL)).encode(),
            )

    def _send(self, content_type: str, raw: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _stream(self, body: dict) -> None:
        model = body.get("model") or MODEL
        events = [_chunk(model, {"content": word + " "}) for word in ANSWER.split(" ")]
        events.append(_chunk(model, {}, finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**_chunk(model, {}), "choices": [], "usage": USAGE})
        raw = b"".join(f"data: {json.dumps(event)}\n\n".encode() for event in events)
        self._send("text/event-stream", raw + b"data: [DONE]\n\n")


def _completion(model: str) -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def _chunk(model: str, delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@contextmanager
def latency_model(latency: float) -> Iterator[LatencyModel]:
    """Serve the stand-in on a free loopback port for the block. `latency` is in seconds,
    before each answer's first byte. A thread per request: two hundred waiting at once are two
    hundred sleeping threads."""
    server = LatencyModel(latency)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
