"""`assistant serve` (the HTTP API under gunicorn) and `assistant worker` (background jobs)."""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace

import click

from assistant.commands.common import KB_UNLOADABLE, load_settings
from assistant.config import Settings

# gevent: many requests waiting on a model at once; gthread: WEB_CONCURRENCY x GUNICORN_THREADS.
WORKER_CLASSES = ("gevent", "gthread")


# Run in a child process: resolving `auto` imports the model clients (httpx, ssl, openai) and
# assistant.llm's thread-local deadlines, none of which may be imported before gevent patches
# the standard library, and which provider it is decides whether gevent is wanted at all.
# The settings come in on stdin (they hold the OpenAI key: not on a command line).
_RESOLVE_IN_CHILD = (
    "import pickle, sys\n"
    "from assistant.llm import resolve_provider_name\n"
    "print(resolve_provider_name(pickle.load(sys.stdin.buffer)))\n"
)


def resolve_auto_provider(settings: Settings) -> Settings:
    """`settings` with LLM_PROVIDER=auto replaced by the provider it resolves to (openai,
    ollama or extractive), so that `gunicorn_worker_class` is chosen for the provider that will
    answer, and the app answers with the one its workers were chosen for (no second probe of
    Ollama to disagree with the first). Unchanged when WORKER_CLASS is set (the app resolves
    `auto` itself then) or LLM_PROVIDER names a provider. The calling process imports nothing
    of the providers': `serve` may still patch it for gevent afterwards."""
    if settings.worker_class or settings.llm_provider != "auto":
        return settings
    try:
        # The child's stderr is the server's: its warning of an Ollama without the model shows.
        done = subprocess.run(
            [sys.executable, "-c", _RESOLVE_IN_CHILD],
            input=pickle.dumps(settings),
            stdout=subprocess.PIPE,
            # Importing the clients takes seconds on a loaded machine; the probe, its timeout.
            timeout=settings.ollama_probe_timeout + 120,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise click.ClickException(f"LLM_PROVIDER=auto could not be resolved ({exc})") from exc
    resolved = replace(settings, llm_provider=done.stdout.decode().strip())
    logging.getLogger(__name__).info(
        "LLM_PROVIDER=auto resolved to %s: %s workers",
        resolved.llm_provider,
        resolved.gunicorn_worker_class,
    )
    return resolved


@click.command()
@click.option("--host", default=None, help="Interface to bind (HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (PORT, default 5000).")
@click.option("--workers", type=int, default=None, help="gunicorn workers (WEB_CONCURRENCY).")
@click.option(
    "--kb",
    default=None,
    help="Answer from this knowledge base (CSV, JSON, a folder of articles, URL or 'demo') "
    "instead of KB_PATH.",
)
def serve(host: str | None, port: int | None, workers: int | None, kb: str | None) -> None:
    """Serve the HTTP API with gunicorn (WORKER_CLASS: gevent or gthread workers)."""
    settings = load_settings(service=True)
    settings = resolve_auto_provider(replace(settings, kb_source=kb) if kb else settings)
    worker_class = settings.gunicorn_worker_class
    if worker_class not in WORKER_CLASSES:
        raise click.ClickException(
            f"WORKER_CLASS={worker_class!r}: use one of {', '.join(WORKER_CLASSES)}"
        )
    if worker_class == "gevent":
        # Before anything else is imported: the app is built here, before the fork, and its
        # locks, thread-locals and psycopg's choice of wait function (made when psycopg is
        # imported) must already be gevent's. A lock made unpatched would block every
        # greenlet of a worker; a thread-local, mix up their requests' deadlines.
        from gevent import monkey
        from tqdm import tqdm

        monkey.patch_all()
        # A thread started here before the fork would be copied into every worker as a
        # greenlet that its threading module does not know, failing there with a traceback.
        # tqdm's monitor thread (the index build's progress bars) is not needed.
        tqdm.monitor_interval = 0
    from gunicorn.app.base import BaseApplication

    # Before prometheus-client is first imported (by assistant.metrics): the workers' samples
    # go to files there, added up at each scrape. A folder of this server's own, in its /tmp.
    # Always a new one: samples left from an earlier server would be added in.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="assistant-metrics-")
    from assistant.app import create_app
    from assistant.embedded_pg import embedded_url, stop_embedded
    from assistant.handoff import MissingSecret
    from assistant.knowledge import KnowledgeBaseError
    from assistant.metrics import worker_exited

    if not settings.database_url:
        # Started once here, before the workers fork, so they all share one cluster.
        settings = replace(settings, database_url=embedded_url(settings.pgdata))
    settings = replace(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
    )
    try:
        app = create_app(settings)
    except KnowledgeBaseError as exc:
        stop_embedded()
        raise click.ClickException(f"{KB_UNLOADABLE}: {exc}") from exc
    except MissingSecret as exc:
        raise click.ClickException(str(exc)) from exc
    # The index and the intent model are hundreds of thousands of long-lived objects: frozen
    # before the fork, full collections skip them (they paused workers 250-290 ms under load,
    # profiled) and the pages stay shared with the master.
    gc.freeze()
    if worker_class == "gevent":
        import gevent

        # Short-lived threads the app started (limits' expiry timer) finish here, not in a
        # copy in each worker (see monitor_interval above).
        gevent.sleep(0.1)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{settings.host}:{settings.port}",
                "workers": settings.workers,
                "threads": settings.threads,
                "worker_class": worker_class,
                # The first answer from a cold Ollama model can take minutes.
                "timeout": int(settings.llm_read_timeout) + 30,
                "loglevel": settings.log_level.lower(),
                # Each worker replays the spool from its own thread as soon as it starts, not
                # before the port is bound nor on a request's time.
                "post_worker_init": lambda worker: app.extensions["flusher"].ensure_running(),
                "child_exit": lambda server, worker: worker_exited(worker.pid),
                "on_exit": lambda server: stop_embedded(),
            }
            # gunicorn 25+ opens a control socket in ~/.gunicorn by default, one path for
            # every server of the user: a second `assistant serve` took over the first's.
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    click.echo(f"serving on http://{settings.host}:{settings.port}", err=True)
    Server().run()


@click.command()
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--until-idle", is_flag=True, help="Exit when no job is ready (for cron and tests).")
def worker(threads: int, until_idle: bool) -> None:
    """Run background jobs (relevance judgements, handoffs posted to HANDOFF_WEBHOOK_URL) from
    PostgreSQL until stopped. Any number of workers, on any machine, share the queue; set
    JOB_WORKER_THREADS=0 on the web processes to leave the jobs to them."""
    from assistant.db import describe_url, open_database
    from assistant.handoff import MissingSecret, build_webhook
    from assistant.jobs import JobRunner
    from assistant.judge import build_judge

    settings = load_settings(service=True)
    database = open_database(settings)
    try:
        webhook = build_webhook(settings, database)
    except MissingSecret as exc:
        raise click.ClickException(str(exc)) from exc
    runner = JobRunner(database, build_judge(settings), handoff=webhook, lease=settings.job_lease)
    # Which database, without its password: a worker on another one than the server's
    # finds nothing to do, and should say where it looked.
    click.echo(
        f"worker {runner.name}: judging with {runner.judge.model}, jobs from database "
        f"{describe_url(database.url)}",
        err=True,
    )
    if until_idle:
        ran = runner.run_until_idle(timeout=float("inf"))
        click.echo(f"ran {ran} jobs", err=True)
        database.close()
        return
    # SIGTERM (docker stop) ends it like Ctrl-C; a job cut short is taken over after its lease.
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    runner.start(threads)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        database.close()
