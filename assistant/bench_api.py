"""`assistant bench api`: the real service under load, measured from outside.

gunicorn serves the configured workers on a synthetic knowledge base, answers extractively (so
no model time hides in the figures) and logs every exchange to PostgreSQL. A separate process
drives it with keep-alive clients, so the load generator's CPU and GIL are not the server's.
Afterwards the returned conversation ids are looked up: every 200 must be a stored row, not a
spooled or lost one.

With `llm_latency`, answers come from a stand-in model that answers after that many seconds
(assistant/bench_model.py): how many conversations one instance holds while each waits on a
model, and whether every one of them is still stored. With `stream`, the clients ask
`/question/stream` and read each answer to its end.

With `outage`, the throwaway PostgreSQL is stopped a third of the way into the load and started
again that many seconds later: answers go to the spool meanwhile, and the result adds the
spool's largest depth, the seconds it took to drain once the database was back, and the p99 of
`GET /health`, polled every 100 ms all along.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil
import psycopg
from tqdm import tqdm

from assistant import knowledge
from assistant.bench_model import LatencyModel, latency_model
from assistant.client import ApiError, AssistantClient, sse_events
from assistant.config import Settings

HOST = "127.0.0.1"
# Not counted: the first requests of each worker and connection pay one-off costs.
WARMUP_SECONDS = 2.0
# Building the intent model on 25,000 documents takes seconds; a first embedded cluster more.
STARTUP_TIMEOUT = 180.0
# Seconds a GET /health may take while waiting for the server to start.
HEALTH_TIMEOUT = 2.0
# Rows are written before /question answers; this covers replies in flight when the load ended.
SETTLE_SECONDS = 1.0
# A few off-topic questions, so the out-of-scope path is part of the mix as it is in real traffic.
OUT_OF_SCOPE_QUESTIONS = 10
HEADERS = {"Content-Type": "application/json"}
# How long the spool may take to drain after an outage before the bench stops waiting.
DRAIN_TIMEOUT = 300.0


class BenchError(RuntimeError):
    """The service did not start, or the load could not be driven."""


@dataclass(frozen=True)
class ApiBenchResult:
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    ok_responses: int
    rows: int
    rss_mb_max: float
    # CPU seconds the workers spent per counted answer (the warm-up's answers included), in
    # ms: what the answers cost whatever else the machine runs.
    cpu_ms_per_answer: float
    workers: int
    threads: int
    worker_class: str
    concurrency: int
    seconds: float
    docs: int
    outage_s: float = 0.0
    spooled_max: int | None = None
    drain_s: float | None = None
    health_p99_ms: float | None = None
    llm_latency_s: float = 0.0
    stream: bool = False
    # Stored answers the model did not write (the extractive fallback, after a model error).
    fallbacks: int = 0
    # The most requests the stand-in model held at once: conversations waiting on it together.
    model_peak: int | None = None
    # The conditions, so a figure is never quoted without them: the machine's cores, its
    # 1-minute load average as the load started and as it ended, and the database used.
    cores: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)
    database: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def lines(self) -> list[str]:
        served = f"{self.workers} x {self.threads} threads"
        if self.worker_class != "gthread":
            served = f"{self.workers} {self.worker_class} workers"
        answers = f"a stand-in model answering after {self.llm_latency_s:g} s"
        route = "/question/stream" if self.stream else "/question"
        rows = [
            (
                "machine",
                f"{self.cores} cores, load average {self.load_average[0]:.1f} at the start and"
                f" {self.load_average[1]:.1f} at the end",
            ),
            ("database", self.database),
            ("workers", served),
            ("knowledge base", f"{self.docs} documents"),
            ("answers", answers if self.llm_latency_s else "extractive"),
            ("load", f"{self.concurrency} keep-alive clients of {route} for {self.seconds:g} s"),
            ("requests per second", f"{self.rps:.1f}"),
            ("latency p50 / p95 / p99", f"{self.p50_ms} / {self.p95_ms} / {self.p99_ms} ms"),
            ("200 responses", str(self.ok_responses)),
            ("errors", str(self.errors)),
            ("rows stored", f"{self.rows} of {self.ok_responses}"),
            ("peak RSS per worker", f"{self.rss_mb_max:.0f} MB"),
            ("worker CPU per answer", f"{self.cpu_ms_per_answer} ms"),
        ]
        if self.llm_latency_s:
            rows += [
                ("model fallbacks among the rows", str(self.fallbacks)),
                ("most model calls at once", str(self.model_peak)),
            ]
        if self.outage_s:
            rows += [
                ("database outage", f"{self.outage_s:g} s"),
                ("rows spooled (most at once)", str(self.spooled_max)),
                ("spool drained in", f"{self.drain_s} s after the database was back"),
                ("/health p99", f"{self.health_p99_ms} ms"),
            ]
        width = max(len(label) for label, _ in rows) + 1
        return [f"{label:<{width}} {value}" for label, value in rows]


@dataclass
class Load:
    """What the clients saw: one latency per counted request, and every answer's id."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    conversation_ids: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    def merge(self, other: Load) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.conversation_ids += other.conversation_ids


def bench_api(
    settings: Settings,
    seconds: float,
    concurrency: int,
    workers: int,
    size: int,
    progress: bool = True,
    outage: float = 0.0,
    llm_latency: float = 0.0,
    stream: bool = False,
    port: int | None = None,
) -> ApiBenchResult:
    """Serve a synthetic KB of `size` documents on `port` (None: a free one), drive it for
    `seconds` with `concurrency` clients, and measure; with `outage`, stop the database for
    that many seconds mid-load; with `llm_latency` (seconds), answer from a model that takes
    that long; with `stream`, ask /question/stream (see the module docstring). Raises
    BenchError."""
    if outage and settings.database_url:
        raise BenchError("--outage stops the throwaway cluster: leave DATABASE_URL unset")
    # Imported here, not above: the spawned load process imports this module too, and these
    # would cost it seconds and a few hundred MB (scikit-learn, the LLM clients) for nothing.
    from assistant.bench import percentile
    from assistant.evaluation import sample_data

    with tempfile.TemporaryDirectory(prefix="assistant-bench-") as tmp:
        directory = Path(tmp)
        source = knowledge.read_file(sample_data(settings))
        kb_path = write_kb(source, size, directory / "kb.csv")
        questions = bench_questions(source, settings.demo_kb.parent / "demo-out-of-scope.txt")
        with (
            database(settings, directory) as url,
            model(llm_latency) as stand_in,
            serving(kb_path, url, workers, directory, stand_in, port) as server,
        ):
            watch = Outage(directory, server.port, outage, WARMUP_SECONDS + seconds / 3)
            if outage:
                watch.start()
            cpu_before = workers_cpu_seconds(server.pid)
            load_before = os.getloadavg()[0]
            load = run_load(server.port, questions, concurrency, seconds, progress, stream)
            cpu = workers_cpu_seconds(server.pid) - cpu_before
            if outage:
                watch.join()
            time.sleep(SETTLE_SECONDS)
            rss_mb = peak_rss_mb(server.pid)
            rows, fallbacks = stored_rows(url, load.conversation_ids)
    if not load.latencies_ms:
        raise BenchError("no request completed")
    return ApiBenchResult(
        rps=round(len(load.latencies_ms) / load.elapsed, 1),
        p50_ms=round(percentile(load.latencies_ms, 0.50), 2),
        p95_ms=round(percentile(load.latencies_ms, 0.95), 2),
        p99_ms=round(percentile(load.latencies_ms, 0.99), 2),
        errors=load.errors,
        ok_responses=len(load.conversation_ids),
        rows=rows,
        rss_mb_max=round(rss_mb, 1),
        cpu_ms_per_answer=round(cpu * 1000 / len(load.latencies_ms), 2),
        workers=workers,
        threads=settings.threads,
        # As the server chooses it, answering from the stand-in or extractively.
        worker_class=replace(
            settings, llm_provider="openai" if llm_latency else "extractive"
        ).gunicorn_worker_class,
        concurrency=concurrency,
        seconds=seconds,
        docs=server.documents,
        llm_latency_s=llm_latency,
        stream=stream,
        fallbacks=fallbacks,
        model_peak=stand_in.peak if stand_in else None,
        cores=os.cpu_count() or 0,
        load_average=(round(load_before, 2), round(os.getloadavg()[0], 2)),
        database=database_label(settings),
        **watch.figures(),
    )


def database_label(settings: Settings) -> str:
    """Which PostgreSQL a run used, without its password: `host:port/dbname`, or the
    throwaway embedded cluster (reached over a Unix socket)."""
    if not settings.database_url:
        return "a throwaway embedded PostgreSQL (Unix socket)"
    from assistant.db import describe_url

    return f"PostgreSQL at {describe_url(settings.database_url)}"


@contextmanager
def model(latency: float) -> Iterator[LatencyModel | None]:
    """The stand-in model when `latency` is set, else None (extractive answers)."""
    if not latency:
        yield None
        return
    with latency_model(latency) as server:
        yield server


class Outage:
    """Stops the throwaway cluster in `directory` after `after` seconds, starts it again
    `seconds` later, and times the spool's drain; meanwhile polls GET /health every 100 ms."""

    def __init__(self, directory: Path, port: int, seconds: float, after: float):
        self.directory, self.port, self.seconds, self.after = directory, port, seconds, after
        self.health_ms: list[float] = []
        self.spooled_max = 0
        self.drain_s: float | None = None
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._outage, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self._threads[0].join()
        self._done.set()
        self._threads[1].join()

    def _outage(self) -> None:
        from assistant.embedded_pg import load_pgserver

        pgserver = load_pgserver()  # the throwaway cluster's own library; see database()
        time.sleep(self.after)
        pgserver.get_server(self.directory / "pgdata", cleanup_mode="stop").cleanup()
        time.sleep(self.seconds)
        pgserver.get_server(self.directory / "pgdata", cleanup_mode="stop")
        back = time.monotonic()
        while time.monotonic() - back < DRAIN_TIMEOUT:
            if self._health().get("spool") == 0:
                self.drain_s = round(time.monotonic() - back, 1)
                return
            time.sleep(0.1)

    def _poll(self) -> None:
        while not self._done.wait(0.1):
            self._health()

    def _health(self) -> dict:
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
            connection.request("GET", "/health")
            body = json.loads(connection.getresponse().read())
            connection.close()
        except (OSError, ValueError, http.client.HTTPException):
            return {}
        self.health_ms.append((time.perf_counter() - started) * 1000)
        self.spooled_max = max(self.spooled_max, int(body.get("spool") or 0))
        return body

    def figures(self) -> dict[str, object]:
        """The result's outage fields (empty without an outage)."""
        if not self.seconds:
            return {}
        from assistant.bench import percentile  # not at the top: see bench_api

        return {
            "outage_s": self.seconds,
            "spooled_max": self.spooled_max,
            "drain_s": self.drain_s,
            "health_p99_ms": round(percentile(self.health_ms, 0.99), 2) if self.health_ms else None,
        }


def write_kb(source: Sequence[knowledge.Document], size: int, path: Path) -> Path:
    """`size` distinct documents. synthetic_kb's phrasings repeat now and then, and the service
    drops exact repeats, so a longer run of them is drawn until enough are distinct (a small
    source KB may have fewer variants: the result's `docs` says how many were served)."""
    from assistant.evaluation import synthetic_kb  # not at the top: see bench_api

    for factor in (1, 2, 4, 8):
        docs = knowledge.deduplicate(synthetic_kb(source, size * factor))
        if len(docs) >= size:
            break
    knowledge.write_csv(path, docs[:size])
    return path


def bench_questions(source: Sequence[knowledge.Document], out_of_scope: Path) -> list[str]:
    """The KB's own customer phrasings and a few off-topic ones, in a fixed shuffled order."""
    questions = [doc.question for doc in source]
    questions += knowledge.read_lines(out_of_scope)[:OUT_OF_SCOPE_QUESTIONS]
    random.Random(0).shuffle(questions)
    return questions


@contextmanager
def database(settings: Settings, directory: Path) -> Iterator[str]:
    """The configured PostgreSQL, else a throwaway embedded cluster: the user's data/pgdata
    must not fill up with benchmark rows."""
    if settings.database_url:
        yield settings.database_url
        return
    from assistant.embedded_pg import load_pgserver

    with load_pgserver().get_server(directory / "pgdata", cleanup_mode="stop") as server:
        yield server.get_uri()


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    documents: int


@contextmanager
def serving(
    kb_path: Path,
    database_url: str,
    workers: int,
    directory: Path,
    stand_in: LatencyModel | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    """`assistant serve` as a subprocess, exactly as deployed, on `port` (None: a free one),
    until the block ends; answering from the stand-in model when given."""
    port = port or _free_port()
    answers = {"LLM_PROVIDER": "extractive"}
    if stand_in:
        answers = {
            "LLM_PROVIDER": "openai",
            "OPENAI_BASE_URL": stand_in.url,
            "OPENAI_API_KEY": "bench",
            "OPENAI_MODEL": "stand-in",
            # The model's own latency is not a fault: only a wait well past it is.
            "LLM_READ_TIMEOUT": str(stand_in.latency + 30),
            "LLM_DEADLINE": str(stand_in.latency + 30),
        }
    env = {
        **os.environ,
        "KB_PATH": str(kb_path),
        **answers,
        "JUDGE_PROVIDER": "none",
        "DATABASE_URL": database_url,
        "HOST": HOST,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        # Spool and caches go to the temporary directory, not the user's data/.
        "DATA_DIR": str(directory),
        # Every client shares one address and carries no key: neither limit applies here.
        "RATE_LIMIT": "",
        "API_KEYS": "",
    }
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(process.pid, port, _wait_until_ready(process, port, workers, log_path))
    finally:
        _stop(process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen, port: int, workers: int, log: Path) -> int:
    """Wait for /health and for every worker; return the number of documents served."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the server exited:\n{_tail(log)}")
        try:
            # A short read: while a server on a taken port is failing, whatever holds the
            # port may accept the connection and never answer (120 s at the default).
            health = AssistantClient(f"http://{HOST}:{port}", read_timeout=HEALTH_TIMEOUT).health()
        except ApiError:
            health = None
        if health and len(psutil.Process(process.pid).children()) == workers:
            return health["knowledge_base"]["documents"]
        time.sleep(0.25)
    raise BenchError(f"the server was not ready within {STARTUP_TIMEOUT:.0f} s:\n{_tail(log)}")


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:]


def _stop(process: subprocess.Popen) -> None:
    # SIGTERM is gunicorn's graceful stop: requests in flight finish and their rows are written.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_load(
    port: int,
    questions: Sequence[str],
    concurrency: int,
    seconds: float,
    progress: bool,
    stream: bool = False,
) -> Load:
    """Drive the server from a spawned process, showing progress until its results arrive."""
    context = multiprocessing.get_context("spawn")
    counted = context.Value("L", 0)
    ready = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_drive,
        args=(port, list(questions), concurrency, seconds, stream, counted, ready, sender),
        name="bench-load",
        daemon=True,
    )
    process.start()
    # Only the child may hold the sending end, so its death reads as end-of-file here.
    sender.close()
    # The clock starts when the clients do, not while the new interpreter is importing.
    while not ready.wait(0.5) and process.is_alive():
        pass
    started = time.monotonic()
    total = WARMUP_SECONDS + seconds
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s{postfix}"
    with tqdm(total=round(total), desc="load", bar_format=bar_format, disable=not progress) as bar:
        while not receiver.poll(0.5):
            bar.n = min(int(time.monotonic() - started), bar.total)
            bar.set_postfix(requests=counted.value)
        bar.n = bar.total
        bar.set_postfix(requests=counted.value)
    try:
        load = receiver.recv()
    except EOFError as exc:
        raise BenchError("the load process died before reporting") from exc
    finally:
        process.join()
    return load


def _drive(
    port: int,
    questions: list[str],
    concurrency: int,
    seconds: float,
    stream: bool,
    counted,
    ready,
    sender,
) -> None:
    """The load process: `concurrency` client threads; sends one merged Load back."""
    ready.set()
    counting_from = time.monotonic() + WARMUP_SECONDS
    until = counting_from + seconds
    loads = [Load() for _ in range(concurrency)]
    threads = [
        threading.Thread(
            target=_client,
            # Each client starts elsewhere in the list, so they do not ask in lockstep.
            args=(port, questions, n * len(questions) // concurrency, counting_from, until),
            kwargs={"load": loads[n], "counted": counted, "stream": stream},
        )
        for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = Load(elapsed=time.monotonic() - counting_from)
    for load in loads:
        merged.merge(load)
    sender.send(merged)
    sender.close()


def _client(
    port: int,
    questions: Sequence[str],
    offset: int,
    counting_from: float,
    until: float,
    *,
    load: Load,
    counted,
    stream: bool,
) -> None:
    """One customer after another on a single keep-alive connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    n = offset
    while (now := time.monotonic()) < until:
        body = json.dumps({"question": questions[n % len(questions)]})
        n += 1
        started = time.perf_counter()
        conversation_id = _ask(connection, body, stream)
        latency_ms = (time.perf_counter() - started) * 1000
        if now < counting_from:
            continue
        load.latencies_ms.append(latency_ms)
        if conversation_id:
            load.conversation_ids.append(conversation_id)
        else:
            load.errors += 1
        with counted.get_lock():
            counted.value += 1
    connection.close()


def _ask(connection: http.client.HTTPConnection, body: str, stream: bool) -> str | None:
    """The answer's conversation id; None for anything but a 200 with one (for a stream, one
    that ends in an `answer` event)."""
    try:
        connection.request("POST", "/question/stream" if stream else "/question", body, HEADERS)
        response = connection.getresponse()
        data = response.read()
    except (OSError, http.client.HTTPException):
        # http.client reconnects on the next request once the broken socket is closed.
        connection.close()
        return None
    if response.status != 200:
        return None
    if stream:
        events = dict(sse_events(iter(data.decode("utf-8", errors="replace").splitlines())))
        data = events.get("answer", "")
    try:
        return json.loads(data)["conversation_id"]
    except (ValueError, KeyError):
        return None


def workers_cpu_seconds(master_pid: int) -> float:
    """User and system CPU seconds used so far by the gunicorn master's workers."""
    return sum(sum(worker.cpu_times()[:2]) for worker in psutil.Process(master_pid).children())


def peak_rss_mb(master_pid: int) -> float:
    """The largest peak resident set among the gunicorn master's workers, in MB."""
    workers = psutil.Process(master_pid).children()
    if not workers:
        raise BenchError("gunicorn has no workers left")
    return max(_peak_rss(worker) for worker in workers) / 2**20


def _peak_rss(process: psutil.Process) -> int:
    # VmHWM is the high-water mark: a worker may have shrunk since its peak.
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except FileNotFoundError:
        # Not Linux: the current resident set is the best available.
        return process.memory_info().rss
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def stored_rows(database_url: str, conversation_ids: Sequence[str]) -> tuple[int, int]:
    """How many of these conversations are stored, and how many of those the model did not
    write (fell back to the extractive answer)."""
    with psycopg.connect(database_url, connect_timeout=10) as connection:
        row = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE fallback) FROM conversations"
            " WHERE id = ANY(%s)",
            (list(conversation_ids),),
        ).fetchone()
    return row[0], row[1]
