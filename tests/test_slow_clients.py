"""Slow clients against the compose stack's load balancer: deploy/haproxy.cfg, as shipped but
for its listening port and its backend, in front of one `assistant serve` with the fewest
request slots (one gthread worker of two threads).

Ten clients that send their headers and then their body a byte a second hold a gthread slot
each when they reach gunicorn directly, so they stall the server; HAProxy holds them itself
until their request is complete, and another client's p50 stays under 50 ms (the issue's
target, checked here because it is the acceptance: the answers take a few ms).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import requests

from assistant.config import PROJECT_ROOT
from tests.conftest import _drop_scratch, _scratch_database, free_port, started

SLOW_CLIENTS = 10


def _lb_config(port: int, backend: int) -> str:
    """deploy/haproxy.cfg with its frontend on `port` and one server at `backend`: the
    defaults, where the slow-client handling lives, are the file's own."""
    shipped = (PROJECT_ROOT / "deploy" / "haproxy.cfg").read_text(encoding="utf-8")
    defaults = re.search(r"^defaults\n(?:[ \t].*\n|\n)+", shipped, re.M).group(0)
    return (
        f"{defaults}\n"
        f"frontend api\n    bind 127.0.0.1:{port}\n    default_backend app\n\n"
        f"backend app\n    server app 127.0.0.1:{backend}\n"
    )


@contextmanager
def trickling_clients(port: int) -> Iterator[None]:
    """`SLOW_CLIENTS` clients that send a POST's headers, then its body a byte a second,
    until the block ends."""
    body = b'{"question": "how do I cancel my subscription?"}'
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(
                b"POST /question HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            for byte in body:
                if stop.wait(1.0):
                    return
                try:
                    client.sendall(bytes([byte]))
                except OSError:
                    return

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(SLOW_CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # every slow client connected and trickling
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


def latencies_ms(url: str, count: int = 20) -> list[float]:
    """One other client's questions, one after another: each one's latency, or inf when it
    was not answered within 5 s."""
    measured = []
    with requests.Session() as session:
        for _ in range(count):
            started_at = time.perf_counter()
            try:
                reply = session.post(f"{url}/question", json={"question": "prices"}, timeout=5)
                ok = reply.status_code == 200
            except requests.RequestException:
                ok = False
            measured.append((time.perf_counter() - started_at) * 1000 if ok else math.inf)
            if not ok:
                break
    return measured


@pytest.mark.timeout(300)
def test_the_load_balancer_holds_slow_clients_so_the_app_keeps_answering(embedded_server, tmp_path):
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    name, database_url = _scratch_database(embedded_server.get_uri())
    app_port, lb_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KB_PATH": "demo",
        "LLM_PROVIDER": "extractive",
        "WORKER_CLASS": "gthread",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "2",
        "PORT": str(app_port),
        "DATA_DIR": str(tmp_path / "data"),
    }
    config = tmp_path / "haproxy.cfg"
    config.write_text(_lb_config(lb_port, app_port), encoding="utf-8")
    app = f"http://127.0.0.1:{app_port}"
    lb = f"http://127.0.0.1:{lb_port}"
    try:
        with ExitStack() as stack:
            stack.enter_context(
                started(
                    [sys.executable, "-m", "assistant", "serve"],
                    env,
                    f"{app}/health/ready",
                    tmp_path / "app.log",
                )
            )
            stack.enter_context(
                started(
                    ["haproxy", "-f", str(config)], env, f"{lb}/health/live", tmp_path / "lb.log"
                )
            )
            # Through the load balancer: the slow clients wait there, the app answers.
            with trickling_clients(lb_port):
                through_lb = latencies_ms(lb)
            p50 = statistics.median(through_lb)
            print(f"\nanother client's p50 through the load balancer: {p50:.1f} ms")
            assert p50 <= 50, through_lb
            # The same clients straight at gunicorn take its two slots: what the balancer
            # spares it (and what shows this test can fail).
            with trickling_clients(app_port):
                direct = latencies_ms(app, count=3)
            assert math.inf in direct
    finally:
        _drop_scratch(embedded_server.get_uri(), name)
