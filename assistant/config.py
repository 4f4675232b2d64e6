"""Settings: one frozen dataclass read from the environment and an optional `.env` file.

The original project's variable names (POSTGRES_*, OPENAI_API_KEY, OLLAMA_BASE_URL, TZ) keep
working so an existing `.env` carries over unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import quote

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent

BITEXT_URL = (
    "https://huggingface.co/datasets/bitext/Bitext-media-llm-chatbot-training-dataset/"
    "resolve/main/bitext-media-llm-chatbot-training-dataset.csv"
)

# Providers served best by gthread workers: nothing to wait on (extractive answers measured
# 12 % and 108 % more requests per second with threads, `assistant bench api`; README), or a
# model computed in the process, which under gevent would stop its worker's other requests.
THREADED_PROVIDERS = ("extractive", "local")

MAX_QUESTION_CHARS = 2000
MAX_BODY_BYTES = 64 * 1024


def _postgres_url(env: Mapping[str, str]) -> str | None:
    """DATABASE_URL wins; else the original POSTGRES_* variables when POSTGRES_HOST is set."""
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    host = env.get("POSTGRES_HOST")
    if not host:
        return None
    user = quote(env.get("POSTGRES_USER", "postgres"), safe="")
    password = env.get("POSTGRES_PASSWORD")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    port = env.get("POSTGRES_PORT", "5432")
    return f"postgresql://{auth}@{host}:{port}/{env.get('POSTGRES_DB', 'postgres')}"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    data_dir: Path = PROJECT_ROOT / "data"
    migrations_dir: Path = PROJECT_ROOT / "initdb"
    kb_source: str = "auto"
    demo_kb: Path = PROJECT_ROOT / "data" / "demo-kb.csv"
    retrieval_settings: Path = PROJECT_ROOT / "data" / "retrieval-settings.json"
    out_of_domain: Path = PROJECT_ROOT / "data" / "out-of-domain.txt"
    handoff_examples: Path = PROJECT_ROOT / "data" / "handoff-examples.txt"
    kb_url: str = BITEXT_URL
    download_timeout: float = 10.0
    profile_path: Path = PROJECT_ROOT / "data" / "business-profile.yaml"
    llm_provider: str = "auto"
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    ollama_base_url: str = "http://localhost:11434"
    ollama_model: str = "phi3"
    llm_connect_timeout: float = 5.0
    llm_read_timeout: float = 60.0
    llm_max_retries: int = 2
    num_results: int = 5
    llm_retry_backoff: float = 0.5
    llm_max_tokens: int = 400
    # Seconds, in all, for one answer or judgement: connect, reads, retries and their waits.
    llm_deadline: float = 30.0
    ollama_read_timeout: float = 300.0
    ollama_probe_timeout: float = 0.5
    local_model_path: Path | None = None
    local_threads: int = 1
    local_batch_threads: int = 0
    local_context: int = 4096
    local_context_entries: int = 1
    local_max_tokens: int = 200
    embedding_provider: str = "local"
    embedding_model: str | None = None
    embedding_base_url: str | None = None
    embedding_multilingual: bool = False
    judge_provider: str = "auto"
    judge_model: str | None = None
    # Threads of each web process that run background jobs (judgements); 0 leaves them to
    # `assistant worker` processes.
    job_worker_threads: int = 1
    # Seconds a running job may go unfinished before another runner takes it over.
    job_lease: float = 300.0
    spool_flush_interval: float = 5.0
    # Where handed-off conversations are posted (unset: nowhere), the key that signs each post
    # (HMAC-SHA256), and seconds to wait for the receiver.
    handoff_webhook_url: str | None = field(default=None, repr=False)
    handoff_webhook_secret: str | None = field(default=None, repr=False)
    handoff_webhook_timeout: float = 10.0
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    publishable_keys: tuple[str, ...] = field(default=(), repr=False)
    rate_limit: str = "120/minute"
    # Requests refused for a missing or wrong key, per client address, before it gets 429.
    auth_failure_limit: str = "10/minute"
    # /stats aggregates the whole table: its own, lower limit, per key.
    stats_rate_limit: str = "30/minute"
    # Seconds one /stats body is served again before it is computed anew.
    stats_cache_seconds: float = 5.0
    # Where the limits are counted: `memory://` (each process alone) or `redis://host:port`,
    # shared by every worker and replica.
    rate_limit_storage_uri: str = "memory://"
    # Keys in a shared storage start with this: two deployments on one Redis stay apart.
    rate_limit_prefix: str = "msa"
    cors_origins: tuple[str, ...] = ()
    # Card numbers are masked always; `PII_MASKING=on` masks emails and phone numbers too.
    pii_masking: bool = False
    pii_phone_region: str = "US"
    # Reverse proxies in front that append the client's address to X-Forwarded-For; 0 trusts
    # none (a client could claim any address).
    trusted_proxy_hops: int = 0
    prices_path: Path = PROJECT_ROOT / "data" / "model-prices.yaml"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 3
    # gthread: more threads than a worker's requests usually in flight, so a short request
    # (a /health probe) gets a thread at once instead of queueing behind answers; the GIL
    # time-slices them (README, Through a database outage).
    threads: int = 4
    # WORKER_CLASS as set; empty: chosen by the provider (see `gunicorn_worker_class`).
    worker_class: str = ""
    tz: str = "UTC"
    log_level: str = "INFO"

    @property
    def gunicorn_worker_class(self) -> str:
        """`gevent` (a greenlet per request: a request waiting on a model holds no scarce
        thread) or `gthread` (WEB_CONCURRENCY x GUNICORN_THREADS requests at once):
        WORKER_CLASS when set, else gthread for THREADED_PROVIDERS and gevent otherwise.
        `auto` is not a provider yet: `assistant serve` resolves it first (cli's
        `resolve_auto_provider`), so that it gets the class of the one that answers."""
        if self.worker_class:
            return self.worker_class
        return "gthread" if self.llm_provider in THREADED_PROVIDERS else "gevent"

    @property
    def keys_required(self) -> bool:
        """Whether requests need a key: any key of either kind is configured."""
        return bool(self.api_keys or self.publishable_keys)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """Read settings; process environment beats `.env`, which beats the defaults."""
        if env is None:
            dotenv_path = dotenv or Path(".env")
            file_values = dotenv_values(dotenv_path) if dotenv_path.is_file() else {}
            env = {**{k: v for k, v in file_values.items() if v is not None}, **os.environ}
        # ASSISTANT_HOME: where initdb/ and the bundled data/ live when installed elsewhere.
        home = Path(env.get("ASSISTANT_HOME", PROJECT_ROOT))
        values = {
            "database_url": _postgres_url(env),
            "data_dir": Path(env.get("DATA_DIR", home / "data")),
            "migrations_dir": Path(env.get("MIGRATIONS_DIR", home / "initdb")),
            "kb_source": env.get("KB_PATH", "auto"),
            "demo_kb": home / "data" / "demo-kb.csv",
            "retrieval_settings": Path(
                env.get("RETRIEVAL_SETTINGS", home / "data" / "retrieval-settings.json")
            ),
            "out_of_domain": Path(
                env.get("OUT_OF_DOMAIN_PATH", home / "data" / "out-of-domain.txt")
            ),
            "handoff_examples": Path(
                env.get("HANDOFF_EXAMPLES", home / "data" / "handoff-examples.txt")
            ),
            "kb_url": env.get("KB_URL", BITEXT_URL),
            "download_timeout": float(env.get("KB_DOWNLOAD_TIMEOUT", 10)),
            # Empty (`BUSINESS_PROFILE=` in .env) is unset, not the current directory.
            "profile_path": Path(
                env.get("BUSINESS_PROFILE") or home / "data" / "business-profile.yaml"
            ),
            "llm_provider": env.get("LLM_PROVIDER", "auto").strip().lower(),
            "openai_api_key": env.get("OPENAI_API_KEY") or None,
            "openai_base_url": env.get("OPENAI_BASE_URL") or None,
            "openai_model": env.get("OPENAI_MODEL", "gpt-4o-mini"),
            "ollama_base_url": env.get("OLLAMA_BASE_URL", "http://localhost:11434"),
            "ollama_model": env.get("OLLAMA_MODEL", "phi3"),
            "llm_connect_timeout": float(env.get("LLM_CONNECT_TIMEOUT", 5)),
            "llm_read_timeout": float(env.get("LLM_READ_TIMEOUT", 60)),
            "llm_max_retries": int(env.get("LLM_MAX_RETRIES", 2)),
            "num_results": int(env.get("NUM_RESULTS", 5)),
            "llm_retry_backoff": float(env.get("LLM_RETRY_BACKOFF", 0.5)),
            "llm_max_tokens": int(env.get("LLM_MAX_TOKENS", 400)),
            "llm_deadline": float(env.get("LLM_DEADLINE", 30)),
            # Ollama's first request loads the model from disk, which can take minutes.
            "ollama_read_timeout": float(env.get("OLLAMA_READ_TIMEOUT", 300)),
            "ollama_probe_timeout": float(env.get("OLLAMA_PROBE_TIMEOUT", 0.5)),
            "local_model_path": Path(env["LOCAL_MODEL_PATH"])
            if env.get("LOCAL_MODEL_PATH")
            else None,
            # Generating a token of a small model is too little work to share between cores
            # (1 thread answered 1.5-2x faster than 2 here); reading the prompt is not, so
            # LOCAL_BATCH_THREADS=0 gives that every core.
            "local_threads": int(env.get("LOCAL_THREADS", 1)),
            "local_batch_threads": int(env.get("LOCAL_BATCH_THREADS", 0)),
            "local_context": int(env.get("LOCAL_CONTEXT", 4096)),
            # A small CPU model reads its prompt at a few hundred tokens a second: with the best
            # entry alone a 60-token answer took 1.2-1.4 s on 2 cores, with two 1.7-1.8 s.
            "local_context_entries": int(env.get("LOCAL_CONTEXT_ENTRIES", 1)),
            "local_max_tokens": int(env.get("LOCAL_MAX_TOKENS", 200)),
            "embedding_provider": env.get("EMBEDDING_PROVIDER", "local").strip().lower(),
            "embedding_model": env.get("EMBEDDING_MODEL") or None,
            "embedding_base_url": env.get("EMBEDDING_BASE_URL") or None,
            "embedding_multilingual": env.get("EMBEDDING_MULTILINGUAL", "").strip().lower()
            in {"1", "true", "yes", "on"},
            "judge_provider": env.get("JUDGE_PROVIDER", "auto").strip().lower(),
            "judge_model": env.get("JUDGE_MODEL") or None,
            "job_worker_threads": int(env.get("JOB_WORKER_THREADS", 1)),
            "job_lease": float(env.get("JOB_LEASE", 300)),
            "spool_flush_interval": float(env.get("SPOOL_FLUSH_INTERVAL", 5)),
            "handoff_webhook_url": env.get("HANDOFF_WEBHOOK_URL", "").strip() or None,
            "handoff_webhook_secret": env.get("HANDOFF_WEBHOOK_SECRET") or None,
            "handoff_webhook_timeout": float(env.get("HANDOFF_WEBHOOK_TIMEOUT", 10)),
            "api_keys": _csv(env.get("API_KEYS", "")),
            "publishable_keys": _csv(env.get("PUBLISHABLE_KEYS", "")),
            "rate_limit": env.get("RATE_LIMIT", "120/minute").strip(),
            "auth_failure_limit": env.get("AUTH_FAILURE_LIMIT", "10/minute").strip(),
            "stats_rate_limit": env.get("STATS_RATE_LIMIT", "30/minute").strip(),
            "stats_cache_seconds": float(env.get("STATS_CACHE_SECONDS", 5)),
            "rate_limit_storage_uri": env.get("RATE_LIMIT_STORAGE_URI", "memory://").strip()
            or "memory://",
            "rate_limit_prefix": env.get("RATE_LIMIT_PREFIX", "msa"),
            "cors_origins": _csv(env.get("CORS_ORIGINS", "")),
            "pii_masking": env.get("PII_MASKING", "").strip().lower() in {"1", "true", "yes", "on"},
            "pii_phone_region": env.get("PII_PHONE_REGION", "US").strip().upper() or "US",
            "trusted_proxy_hops": int(env.get("TRUSTED_PROXY_HOPS", 0)),
            "prices_path": Path(env.get("MODEL_PRICES", home / "data" / "model-prices.yaml")),
            "host": env.get("HOST", "127.0.0.1"),
            "port": int(env.get("PORT", 5000)),
            "workers": int(env.get("WEB_CONCURRENCY", 3)),
            "threads": int(env.get("GUNICORN_THREADS", 4)),
            "worker_class": env.get("WORKER_CLASS", "").strip().lower(),
            "tz": env.get("TZ", "UTC"),
            "log_level": env.get("LOG_LEVEL", "INFO").upper(),
        }
        return cls(**values)

    def public(self) -> dict[str, object]:
        """Settings safe to log or show: secrets are left out."""
        # A webhook URL often holds its token (Slack's, Zapier's): a secret too.
        hidden = {
            "database_url",
            "openai_api_key",
            "api_keys",
            "publishable_keys",
            "handoff_webhook_url",
            "handoff_webhook_secret",
        }
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name not in hidden}
