"""Novelty rejection: MinHash and embedding similarity, thresholds, the judge band, and the endpoint's embeddings API
(against the project's local server)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from evolve.llm.settings import LLMSettings, ModelSpec
from evolve.mutators.base import MutationRequest, ProgramView, Proposal
from evolve.mutators.llm import LLMMutator
from evolve.search.engine import SearchContext, SearchEngine, SearchMutator, is_not_novel
from evolve.search.novelty import MinHasher, NoveltyIndex
from evolve.search.settings import resolve_search_settings
from tests import llm_server as server_lib
from tests.llm_server import ChatServer, Reply

llm_server = server_lib.llm_server

PROGRAM = """\
# EVOLVE-BLOCK-START
import math


def pack(n):
    centers = []
    rows = [5, 5, 6, 5, 5]
    margin = 0.08
    for r, count in enumerate(rows):
        y = margin + r * (1 - 2 * margin) / (len(rows) - 1)
        for c in range(count):
            x = margin + c * (1 - 2 * margin) / max(1, count - 1)
            centers.append((x, y))
    return centers
# EVOLVE-BLOCK-END


def run_packing():
    return pack(26)
"""
TWEAKED = PROGRAM.replace("margin = 0.08", "margin = 0.0801")
REWRITTEN = """\
# EVOLVE-BLOCK-START
def pack(n):
    import random
    rng = random.Random(3)
    points = [(rng.random(), rng.random()) for _ in range(n)]
    for _ in range(200):
        points = [(min(0.95, max(0.05, x + 0.01 * (0.5 - x))), y * 0.99 + 0.005) for x, y in points]
    return points
# EVOLVE-BLOCK-END


def run_packing():
    return pack(26)
"""


def test_minhash_tells_near_copies_from_rewrites() -> None:
    hasher = MinHasher(permutations=256)
    base = hasher.signature(PROGRAM)
    assert float(MinHasher.similarity(base, hasher.signature(PROGRAM))) == 1.0
    assert float(MinHasher.similarity(base, hasher.signature(TWEAKED))) > 0.9
    assert float(MinHasher.similarity(base, hasher.signature(REWRITTEN))) < 0.3
    # Stable across processes: no salted hash (the value is part of the archive's audit).
    again = MinHasher(permutations=256).signature(PROGRAM)
    assert np.array_equal(base, again)


def test_the_threshold_decides_and_only_the_band_is_judged() -> None:
    asked = []

    def judge(child: str, nearest: str, seed: int) -> tuple[bool, str]:
        asked.append(seed)
        return False, "COPY"

    strict = NoveltyIndex("minhash", threshold=0.999, judge_band=0.2, judge=judge)
    snapshot = strict.snapshot(0, ("parent", PROGRAM), ("parent", "other"), (PROGRAM, REWRITTEN))
    verdict = strict.check(snapshot, "tweak", TWEAKED, seed=5)
    assert not verdict.novel and verdict.nearest == "parent" and verdict.judged == "COPY" and asked == [5]
    fresh = strict.check(snapshot, "fresh", REWRITTEN.replace("0.99", "0.98"), seed=6)
    assert fresh.novel is False and fresh.nearest == "other", "a copy of another elite is not novel either"
    loose = NoveltyIndex("minhash", threshold=0.9999, judge_band=0.0)
    verdict = loose.check(loose.snapshot(0, ("parent", PROGRAM), (), ()), "tweak", TWEAKED, seed=7)
    assert verdict.novel and 0.8 < verdict.similarity < 0.9999, "below the threshold and no judge: novel"
    lenient = NoveltyIndex("minhash", threshold=0.5)
    verdict = lenient.check(lenient.snapshot(0, ("parent", PROGRAM), ("parent",), (PROGRAM,)), "t", TWEAKED, 1)
    assert not verdict.novel
    assert lenient.stats()["rejected"] == 1 and lenient.stats()["checked"] == 1


def test_island_matrices_are_rebuilt_only_when_the_elites_change() -> None:
    index = NoveltyIndex("minhash", threshold=0.95)
    ids, codes = ("a", "b"), (PROGRAM, REWRITTEN)
    first = index.snapshot(0, ("a", PROGRAM), ids, codes)
    second = index.snapshot(0, ("b", REWRITTEN), ids, codes)
    assert first.matrix is second.matrix
    third = index.snapshot(0, ("a", PROGRAM), ids[:1], codes[:1])
    assert third.matrix is not first.matrix and third.matrix.shape[0] == 1


def _settings(server: ChatServer) -> LLMSettings:
    return LLMSettings(models=(ModelSpec("fast"),), api_base=server.url, timeout=2.0, retries=1, backoff=0.01,
                       backoff_max=0.05, patience=30.0)


def test_embeddings_come_from_the_endpoint(llm_server: ChatServer) -> None:
    mutator = LLMMutator(_settings(llm_server))
    try:
        vectors = mutator.embed("fast", [PROGRAM, TWEAKED, REWRITTEN])
        index = NoveltyIndex("embedding", threshold=0.99, embedder=type("E", (), {
            "embed": staticmethod(lambda texts: mutator.embed("fast", list(texts)))})())
        snapshot = index.snapshot(0, ("parent", PROGRAM), ("parent",), (PROGRAM,))
        assert not index.check(snapshot, "t", TWEAKED, 1).novel
        assert index.check(snapshot, "r", REWRITTEN, 2).novel
    finally:
        mutator.close()
    assert len(vectors) == 3 and len(vectors[0]) == server_lib.EMBEDDING_DIMS
    assert llm_server.embedding_requests[0]["model"] == "fast"
    assert mutator.stats()["embeddings"]["inputs"] >= 5
    llm_server.embedding_status = 500
    failing = LLMMutator(_settings(llm_server))
    try:
        with pytest.raises(Exception, match="embeddings from fast failed"):
            failing.embed("fast", ["x"])
    finally:
        failing.close()


def _engine(server: ChatServer, table: dict, mutator: LLMMutator) -> SearchEngine:
    return SearchEngine(resolve_search_settings(table), mutator=mutator, islands=1, run_seed=0, database_rate=0.7,
                        sign=1.0, deterministic=True, description="d", metric="score", direction="maximize",
                        language="python", record_event=lambda *a: None)


def test_the_llm_judge_decides_the_band_and_its_call_is_billed_to_the_child(llm_server: ChatServer) -> None:
    inner = LLMMutator(_settings(llm_server))
    engine = _engine(llm_server, {"novelty": {"enabled": True, "threshold": 0.999, "judge_band": 0.3}}, inner)
    wrapped = SearchMutator(inner, engine)
    answer = f"```python\n{TWEAKED.split('# EVOLVE-BLOCK-END')[0]}# EVOLVE-BLOCK-END\n```"
    llm_server.push(Reply(content="<<<<<<< SEARCH\nmargin = 0.08\n=======\nmargin = 0.0801\n>>>>>>> REPLACE\n"),
                    Reply(content="COPY"))
    parent = ProgramView("parent", PROGRAM, score=1.0)
    snapshot = engine.novelty.snapshot(0, ("parent", PROGRAM), ("parent",), (PROGRAM,))  # type: ignore[union-attr]
    request = MutationRequest(parent=parent, iteration=1, seed=11,
                              search=SearchContext({"iteration": 1, "island": 0}, snapshot))
    try:
        proposal = wrapped.propose(request)
    finally:
        wrapped.close()
    verdict = is_not_novel(proposal)
    assert verdict is not None and verdict["judge"] == "COPY"
    kinds = [c["kind"] for c in proposal.llm["calls"]]
    assert kinds == ["edit", "novelty_judge"], "the judge's call is in the child's audit (budgets count it)"
    assert proposal.llm["tokens"] == sum(c["prompt_tokens"] + c["completion_tokens"] for c in proposal.llm["calls"])
    assert "NOVEL or COPY" in llm_server.requests[1]["messages"][1]["content"]
    del answer


def test_a_child_without_search_context_is_proposed_as_it_always_was(llm_server: ChatServer) -> None:
    inner = LLMMutator(_settings(llm_server))
    engine = _engine(llm_server, {"novelty": {"enabled": True}}, inner)
    llm_server.push("<<<<<<< SEARCH\nmargin = 0.08\n=======\nmargin = 0.07\n>>>>>>> REPLACE\n")
    try:
        proposal = SearchMutator(inner, engine).propose(
            MutationRequest(parent=ProgramView("p", PROGRAM), iteration=1, seed=3))
    finally:
        inner.close()
    assert "search" not in proposal.llm and proposal.child_code and "margin = 0.07" in proposal.child_code
    assert is_not_novel(replace(Proposal("", "x"), llm={"search": {"novelty": {"novel": True}}})) is None
