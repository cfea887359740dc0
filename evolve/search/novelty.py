"""Novelty rejection: a child too similar to its parent or to one of its island's elites is not evaluated.

Similarity is measured on the evolve blocks (the only code a child may change):

* ``minhash`` (default, offline, no model): the Jaccard similarity of the sets of ``shingle``-token shingles,
  estimated from MinHash signatures of ``permutations`` values (each shingle hashed once with BLAKE2b, then mixed with
  one 64-bit constant per permutation through the SplitMix64 finaliser; a signature is the minimum per permutation).
  Two programs that differ by one literal in a 100-line block share ~98% of their 4-token shingles.
* ``embedding``: the cosine similarity of the blocks' embeddings from the endpoint's embeddings API.

A child's similarity is its highest against the parent and the island's elites; at or above ``threshold`` the child
is ``not_novel``. With a judge, a child in the band ``[threshold - judge_band, threshold)`` is asked to the LLM,
which may call it a near-copy too.

Cost per child is constant in the archive's size: each program's sketch is computed once and cached (bounded), and
each island's elite sketches are stacked into one matrix that is rebuilt only when the island's elites change. The
comparison of a child runs where its proposal is made (the mutation thread), against a snapshot of its island taken
when the child was planned: in ``--deterministic`` mode that is the state after the previous batch, as everything
else.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from evolve.blocks import evolvable_text

_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\S")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class MinHasher:
    """MinHash signatures of token shingles; deterministic across processes (no salted ``hash``)."""

    def __init__(self, permutations: int = 128, shingle: int = 4, seed: int = 0x5EED):
        self.permutations = permutations
        self.shingle = shingle
        self._salts = _splitmix(np.arange(1, permutations + 1, dtype=np.uint64) + np.uint64(seed))

    def shingles(self, text: str) -> np.ndarray:
        tokens = _TOKEN.findall(text)
        k = self.shingle
        if len(tokens) < k:
            grams = [" ".join(tokens)] if tokens else []
        else:
            grams = [" ".join(tokens[i:i + k]) for i in range(len(tokens) - k + 1)]
        unique = sorted(set(grams))
        return np.array([int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little")
                         for g in unique], dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        base = self.shingles(text)
        if base.size == 0:
            return np.full(self.permutations, _MASK64, dtype=np.uint64)
        return _splitmix(base[:, None] ^ self._salts[None, :]).min(axis=0)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Estimated Jaccard similarity of ``a`` (one signature) with each row of ``b`` (or with ``b``)."""
        return np.mean(np.asarray(b) == a, axis=-1)


class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class EmbeddingSketcher:
    """Unit-length embeddings of the blocks (cosine similarity is then a dot product)."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def signatures(self, texts: Sequence[str]) -> list[np.ndarray]:
        vectors = self.embedder.embed(list(texts))
        out = []
        for vector in vectors:
            v = np.asarray(vector, dtype=float)
            norm = float(np.linalg.norm(v))
            out.append(v / norm if norm > 0 else v)
        return out

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(b) @ a


@dataclass(frozen=True)
class IslandSnapshot:
    """What a child is compared with: its parent's sketch and its island's elites (ids, codes, stacked sketches)."""

    parent_id: str
    parent: np.ndarray
    ids: tuple[str, ...]
    codes: tuple[str, ...]
    matrix: np.ndarray | None


@dataclass(frozen=True)
class Verdict:
    similarity: float
    nearest: str  # the program it is most similar to
    novel: bool
    method: str
    judged: str = ""  # the LLM judge's answer, when asked

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"similarity": round(self.similarity, 4), "nearest": self.nearest,
                                   "novel": self.novel, "method": self.method}
        if self.judged:
            data["judge"] = self.judged
        return data


Judge = Callable[[str, str, int], tuple[bool, str]]  # (child code, nearest code, seed) -> (novel, answer)


class NoveltyIndex:
    """Sketches of programs by id (bounded cache) and per-island elite matrices. Thread-safe."""

    def __init__(self, method: str, threshold: float, *, judge_band: float = 0.0, permutations: int = 128,
                 shingle: int = 4, embedder: Embedder | None = None, capacity: int = 4096,
                 judge: Judge | None = None):
        self.method = method
        self.threshold = threshold
        self.judge_band = judge_band if judge is not None else 0.0
        self.judge = judge
        self.capacity = capacity
        self._minhash = MinHasher(permutations, shingle) if method == "minhash" else None
        if method == "embedding" and embedder is None:
            raise ValueError("the embedding method needs an embedder (the LLM endpoint)")
        self._embed = EmbeddingSketcher(embedder) if embedder is not None else None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._islands: dict[int, tuple[tuple[str, ...], np.ndarray | None]] = {}
        self._lock = threading.Lock()
        self.checked = 0
        self.rejected = 0
        self.judged = 0

    # -- sketches ---------------------------------------------------------------------------------------------------
    def _compute(self, codes: Sequence[str]) -> list[np.ndarray]:
        texts = [evolvable_text(c) for c in codes]
        if self._minhash is not None:
            return [self._minhash.signature(t) for t in texts]
        assert self._embed is not None
        return self._embed.signatures(texts)

    def _similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self._minhash is not None:
            return MinHasher.similarity(a, b)
        return EmbeddingSketcher.similarity(a, b)

    def sketches(self, items: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        """Sketches of ``(program_id, code)`` pairs, from the cache or computed (in one call for the missing)."""
        with self._lock:
            found = {pid: self._cache[pid] for pid, _ in items if pid in self._cache}
            for pid in found:
                self._cache.move_to_end(pid)
        missing = [(pid, code) for pid, code in items if pid not in found]
        if missing:
            computed = self._compute([code for _, code in missing])
            with self._lock:
                for (pid, _), sketch in zip(missing, computed, strict=True):
                    found[pid] = sketch
                    self._remember(pid, sketch)
        return [found[pid] for pid, _ in items]

    def _remember(self, program_id: str, sketch: np.ndarray) -> None:
        self._cache[program_id] = sketch
        self._cache.move_to_end(program_id)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    # -- driver side --------------------------------------------------------------------------------------------------
    def snapshot(self, island: int, parent: tuple[str, str], ids: tuple[str, ...],
                 codes: tuple[str, ...]) -> IslandSnapshot:
        """The comparison set of a child of ``parent`` on ``island``: the island's elites ``ids`` with their ``codes``
        (called when the child is planned). The island's matrix is rebuilt only when ``ids`` changed."""
        with self._lock:
            cached = self._islands.get(island)
        if cached is None or (cached[0] is not ids and cached[0] != ids):
            sketches = self.sketches(list(zip(ids, codes, strict=True)))
            matrix = np.stack(sketches) if sketches else None
            with self._lock:
                self._islands[island] = (ids, matrix)
        else:
            matrix = cached[1]
        (parent_sketch,) = self.sketches([parent])
        return IslandSnapshot(parent[0], parent_sketch, ids, codes, matrix)

    # -- mutation side ------------------------------------------------------------------------------------------------
    def check(self, snapshot: IslandSnapshot, child_id: str, child_code: str, seed: int) -> Verdict:
        """Compare a child with its snapshot; ask the judge in the borderline band. Caches the child's sketch."""
        (sketch,) = self.sketches([(child_id, child_code)])
        best, nearest, nearest_code = float(self._similarity(sketch, snapshot.parent)), snapshot.parent_id, ""
        if snapshot.matrix is not None and len(snapshot.ids):
            sims = self._similarity(sketch, snapshot.matrix)
            i = int(np.argmax(sims))
            if float(sims[i]) > best:
                best, nearest, nearest_code = float(sims[i]), snapshot.ids[i], snapshot.codes[i]
        if not nearest_code and nearest in snapshot.ids:
            nearest_code = snapshot.codes[snapshot.ids.index(nearest)]
        novel, judged = best < self.threshold, ""
        if novel and self.judge is not None and best >= self.threshold - self.judge_band and nearest_code:
            novel, judged = self.judge(child_code, nearest_code, seed)
            with self._lock:
                self.judged += 1
        with self._lock:
            self.checked += 1
            self.rejected += not novel
        return Verdict(best, nearest, novel, self.method, judged)

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"method": self.method, "threshold": self.threshold, "checked": self.checked,
                    "rejected": self.rejected, "judged": self.judged, "cached": len(self._cache)}
