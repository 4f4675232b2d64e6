"""Slow clients against the compose stack's load balancer: deploy/haproxy.cfg, as shipped but
for its listening port and its backend, in front of one `assistant serve` with the fewest
request slots (one gthread worker of two threads).

Clients that send their headers and then trickle the body hold a gthread slot each when they
reach gunicorn directly, so a few of them stall the server; HAProxy holds them itself until
their request is complete, and the server keeps answering others.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from contextlib import ExitStack

import pytest
import requests

from assistant.config import PROJECT_ROOT
from tests.conftest import _drop_scratch, _scratch_database, free_port, started

SLOW_CLIENTS = 6


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


def _trickling_clients(port: int) -> list[socket.socket]:
    """Clients that send a POST's headers and the first byte of its body, then nothing."""
    body = b'{"question": "how do I cancel?"}'
    clients = []
    for _ in range(SLOW_CLIENTS):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(
            b"POST /question HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:1])
        )
        clients.append(client)
    return clients


def _answers(url: str) -> bool:
    """Whether a normal question is answered while the slow clients hold on (a liveness
    check: the timeout is far above an answer's few milliseconds)."""
    try:
        reply = requests.post(f"{url}/question", json={"question": "prices"}, timeout=8)
    except requests.RequestException:
        return False
    return reply.status_code == 200


@pytest.mark.timeout(300)
def test_the_load_balancer_holds_slow_clients_so_the_app_keeps_answering(
    embedded_server, tmp_path
):
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
            held = _trickling_clients(lb_port)
            time.sleep(1)
            assert _answers(lb)
            for client in held:
                client.close()
            # The same clients straight at gunicorn take its two slots: what the balancer
            # spares it (and what shows this test can fail).
            stalled = _trickling_clients(app_port)
            time.sleep(1)
            assert not _answers(app)
            for client in stalled:
                client.close()
    finally:
        _drop_scratch(embedded_server.get_uri(), name)
