from pathlib import Path

from assistant.config import Settings


def test_original_postgres_variables_build_a_url():
    env = {
        "POSTGRES_HOST": "db",
        "POSTGRES_PORT": "5433",
        "POSTGRES_DB": "llm_rag",
        "POSTGRES_USER": "admin",
        "POSTGRES_PASSWORD": "p@ss word",
    }
    assert Settings.from_env(env).database_url == "postgresql://admin:p%40ss%20word@db:5433/llm_rag"


def test_database_url_wins_and_nothing_means_embedded():
    env = {"DATABASE_URL": "postgresql://x@y/z", "POSTGRES_HOST": "ignored"}
    assert Settings.from_env(env).database_url == "postgresql://x@y/z"
    assert Settings.from_env({}).database_url is None


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=6001\nLLM_PROVIDER=OpenAI\nOPENAI_MODEL=from-file\n")
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    settings = Settings.from_env(dotenv=dotenv)
    assert settings.port == 6001
    assert settings.llm_provider == "openai"
    assert settings.openai_model == "from-env"


def test_public_view_hides_secrets():
    settings = Settings.from_env(
        {"OPENAI_API_KEY": "sk-secret", "DATABASE_URL": "postgresql://u:pw@h/d"}
    )
    shown = str(settings.public()) + repr(settings)
    assert "sk-secret" not in shown and "pw@h" not in shown
    assert settings.public()["openai_model"] == "gpt-4o-mini"


def test_worker_class_is_gevent_but_gthread_with_no_model_server_to_wait_on():
    assert Settings.from_env({}).gunicorn_worker_class == "gevent"
    assert Settings.from_env({"LLM_PROVIDER": "openai"}).gunicorn_worker_class == "gevent"
    assert Settings.from_env({"LLM_PROVIDER": "local"}).gunicorn_worker_class == "gthread"
    assert Settings.from_env({"LLM_PROVIDER": "Extractive"}).gunicorn_worker_class == "gthread"
    assert Settings.from_env(
        {"LLM_PROVIDER": "local", "WORKER_CLASS": "gevent"}
    ).gunicorn_worker_class == ("gevent")
    assert Settings.from_env({"WORKER_CLASS": " GThread "}).gunicorn_worker_class == "gthread"
