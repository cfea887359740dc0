"""The tune mutator's literal roles (``evolve.mutators.literals``) and what it learns from outcomes."""

from __future__ import annotations

import json

import pytest

from evolve.edits import apply_response
from evolve.mutators.base import MutationOutcome, MutationRequest, ProgramView
from evolve.mutators.literals import literal_sites
from evolve.mutators.tune import TuneMutator

# Row counts that must sum to 12, a divisor, an index, and two floats whose best values are A = 2, B = 1.
STRUCTURED = '''"""A toy with structural integers."""

# EVOLVE-BLOCK-START
COUNTS = [3, 4, 5]  # entries per row; must sum to 12
A = 0.5
B = 1.5


def solve():
    rows = [[A] * n for n in COUNTS]
    flat = [v for row in rows for v in row]
    pair = (flat[0], B)
    return flat, pair[1] / 2
# EVOLVE-BLOCK-END
'''


def score_of(code: str) -> float | None:
    """The toy's trusted check, run here (an offline test of the mutator, not of the sandbox)."""
    namespace: dict[str, object] = {}
    try:
        exec(compile(code, "candidate", "exec"), namespace)
        flat, half_b = namespace["solve"]()  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - any failure makes the child invalid
        return None
    if len(flat) != 12:
        return None
    a = flat[0]
    return -((a - 2.0) ** 2) - (2 * half_b - 1.0) ** 2


def request(code: str, seed: int, iteration: int = 1) -> MutationRequest:
    return MutationRequest(parent=ProgramView(program_id="p", code=code), iteration=iteration, seed=seed)


def hill_climb(mutator: TuneMutator, steps: int, seed: int = 0) -> tuple[float, float, str]:
    """A greedy climb fed back through ``observe``: (valid share, best score, best code)."""
    best_code, best = STRUCTURED, score_of(STRUCTURED)
    assert best is not None
    valid = 0
    for i in range(steps):
        proposal = mutator.propose(request(best_code, seed=seed * 100_000 + i, iteration=i))
        child = apply_response(best_code, proposal.response).unwrap()
        score = score_of(child)
        status = "ok" if score is not None else "runtime_error"
        mutator.observe(proposal, MutationOutcome(status, best, score))
        if score is not None:
            valid += 1
            if score > best:
                best_code, best = child, score
    return valid / steps, best, best_code


def test_sites_have_stable_keys_and_roles() -> None:
    sites = literal_sites(STRUCTURED)
    by_text = [(s.literal.text, s.named, s.divisor, s.group) for s in sites]
    assert by_text == [("3", False, False, 0), ("4", False, False, 0), ("5", False, False, 0),
                       ("0.5", True, False, -1), ("1.5", True, False, -1), ("0", False, False, -1),
                       ("1", False, False, -1), ("2", False, True, -1)]
    moved = STRUCTURED.replace("[3, 4, 5]", "[2, 4, 6]").replace("A = 0.5", "A = 0.75").replace("/ 2", "/ 3")
    assert [s.key for s in literal_sites(moved)] == [s.key for s in sites]
    assert len({s.key for s in sites}) == len(sites)


def test_c_sites() -> None:
    code = "// EVOLVE-BLOCK-START\n#define TILE 16\nconst float RATE = 0.5f;\nint w[] = {1, 2};\nx = y % 4;\n" \
           "// EVOLVE-BLOCK-END\n"
    roles = [(s.literal.text, s.named, s.divisor, s.group) for s in literal_sites(code, "cuda")]
    assert roles == [("16", True, False, -1), ("0.5f", True, False, -1), ("1", False, False, 0),
                     ("2", False, False, 0), ("4", False, True, -1)]


def test_a_divisor_never_becomes_zero_and_transfers_keep_the_sum() -> None:
    mutator = TuneMutator(scale=3.0, literals_per_edit=3)
    transfers = 0
    for seed in range(400):
        child = apply_response(STRUCTURED, mutator.propose(request(STRUCTURED, seed)).response).unwrap()
        assert "/ 0" not in child and "/ -0" not in child
        counts = json.loads(child.split("COUNTS = ")[1].split("  #")[0])
        if sorted(counts) != [3, 4, 5] and sum(counts) == 12:
            transfers += 1
    assert transfers > 20


def test_learning_keeps_most_children_valid_and_beats_the_plain_operator() -> None:
    learned = [hill_climb(TuneMutator(), 150, seed) for seed in range(3)]
    plain = [hill_climb(TuneMutator(learn=False), 150, seed) for seed in range(3)]
    learned_valid = sum(v for v, _, _ in learned) / 3
    plain_valid = sum(v for v, _, _ in plain) / 3
    assert learned_valid >= 0.8, learned_valid
    assert learned_valid >= plain_valid + 0.15, (learned_valid, plain_valid)
    seed_score = score_of(STRUCTURED)
    assert seed_score is not None and all(best > seed_score + 1.0 for _, best, _ in learned)


def test_literals_that_break_the_program_fade_out() -> None:
    mutator = TuneMutator()
    hill_climb(mutator, 120)
    stats = {row["literal"]: row for row in mutator.stats()["literals"]}
    entries = [row for key, row in stats.items() if key.startswith("COUNTS") and not key.endswith("sum")]
    floats = [stats[key] for key in stats if key.startswith(("A =", "B ="))]
    assert sum(r["valid"] for r in entries) == 0  # changing one entry alone never gave a valid child
    assert sum(r["tries"] for r in entries) < min(r["tries"] for r in floats)
    transfer = next(row for key, row in stats.items() if key.endswith("sum"))
    assert transfer["tries"] > 0 and transfer["valid"] >= 0.8 * transfer["tries"]  # (its credit is shared)
    json.dumps(mutator.stats())
    assert "totals" not in mutator.stats()  # that key is the LLM mutator's (the run summary prints it)


def test_learning_is_deterministic_for_the_same_outcomes() -> None:
    one, two = TuneMutator(), TuneMutator()
    assert hill_climb(one, 60) == hill_climb(two, 60)
    assert one.stats() == two.stats()
    # The same seed after different histories may propose differently: the learned state counts.
    assert one.propose(request(STRUCTURED, 7)).response == two.propose(request(STRUCTURED, 7)).response


def test_the_typical_gain_is_kept_as_running_totals() -> None:
    """A proposal reads the improvements and gains summed over every literal from totals ``observe`` keeps (no pass
    over all the literals ever credited): they equal the sums over the statistics."""
    mutator = TuneMutator()
    hill_climb(mutator, 80)
    arms = mutator._stats.values()
    assert mutator._improved == sum(st.improved for st in arms) > 0
    assert mutator._gain == pytest.approx(sum(st.gain for st in arms), rel=1e-12)


@pytest.mark.parametrize("status", ["duplicate", "invalid_edit", "system_error", "evaluator_error"])
def test_outcomes_that_say_nothing_about_the_literals_are_ignored(status: str) -> None:
    mutator = TuneMutator()
    for seed in range(20):
        proposal = mutator.propose(request(STRUCTURED, seed))
        mutator.observe(proposal, MutationOutcome(status, 1.0, None))
    assert mutator.stats()["observed"] == 0 and mutator.stats()["literals"] == []


def test_float_noise_is_not_an_improvement() -> None:
    mutator = TuneMutator(literals_per_edit=1)
    for seed in range(30):
        proposal = mutator.propose(request(STRUCTURED, seed))
        mutator.observe(proposal, MutationOutcome("ok", 2.0, 2.0 + 4.4e-16))
    assert sum(row["improved"] for row in mutator.stats()["literals"]) == 0
    assert mutator.stats()["valid_share"] == 1.0


def test_an_unknown_proposal_is_ignored() -> None:
    from evolve.mutators.base import Proposal

    mutator = TuneMutator()
    mutator.observe(Proposal(response="not mine", mutator="tune"), MutationOutcome("ok", 1.0, 2.0))
    assert mutator.stats()["observed"] == 0


def test_a_tune_mutator_pickles_with_its_learning() -> None:
    import pickle

    mutator = TuneMutator()
    hill_climb(mutator, 20)
    copy = pickle.loads(pickle.dumps(mutator))
    assert copy.stats() == mutator.stats()
    assert copy.propose(request(STRUCTURED, 3)) == mutator.propose(request(STRUCTURED, 3))


@pytest.mark.ray
def test_a_deterministic_run_with_learning_is_identical_at_any_concurrency(ray_session, tmp_path) -> None:
    """Outcomes reach ``observe`` in iteration order with ``--deterministic``, so what tune learns, and so every
    child, is the same at concurrency 1 and 4."""
    from .test_loop import EVALUATOR, PROBLEM_TOML, SEED, program_sequence, run_evolution

    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "seed.py").write_text(SEED)
    (folder / "evaluator.py").write_text(EVALUATOR)
    (folder / "problem.toml").write_text(PROBLEM_TOML)
    one, four = TuneMutator(), TuneMutator()
    run_evolution(folder, tmp_path / "c1", one, deterministic=True, concurrency=1, iterations=24)
    run_evolution(folder, tmp_path / "c4", four, deterministic=True, concurrency=4, iterations=24)
    assert program_sequence(tmp_path / "c1") == program_sequence(tmp_path / "c4")
    assert one.stats() == four.stats() and one.stats()["observed"] > 0


def test_literals_whose_changes_pay_more_are_tried_more() -> None:
    from evolve.mutators.tune import ArmStats

    big, small, untried = ArmStats(), ArmStats(), ArmStats()
    for _ in range(4):
        big.update(True, True, 1, gain=0.1)
        small.update(True, True, 1, gain=0.001)
    typical = (big.gain + small.gain) / (big.improved + small.improved)
    assert big.appeal(typical) > 3 * small.appeal(typical) and big.appeal(typical) > untried.appeal(typical)
    assert big.appeal(None) == small.appeal(None)  # before any improvement: counts alone
    failing = ArmStats()
    for _ in range(4):
        failing.update(False, False, -1)
    assert failing.appeal(typical) < untried.appeal(typical) and failing.step < 1.0


def test_what_tune_learned_is_rebuilt_from_its_answers_and_outcomes_alone() -> None:
    """A resumed run replays the archive's answers and outcomes (``evolve.resume.past_outcomes``): a fresh mutator
    fed only those texts ends with the same statistics, and so proposes the same next child."""
    from evolve.mutators.base import Proposal

    live, history = TuneMutator(), []
    best_code, best = STRUCTURED, score_of(STRUCTURED)
    for i in range(40):
        proposal = live.propose(request(best_code, seed=i, iteration=i))
        child = apply_response(best_code, proposal.response).unwrap()
        score = score_of(child)
        outcome = MutationOutcome("ok" if score is not None else "runtime_error", best, score)
        live.observe(proposal, outcome)
        history.append((proposal.response, outcome))
        if score is not None and score > best:
            best_code, best = child, score
    resumed = TuneMutator()
    for response, outcome in history:
        resumed.observe(Proposal(response=response, mutator="tune"), outcome)
    assert live.stats()["observed"] == resumed.stats()["observed"] == 40
    assert live._stats == resumed._stats
    following = request(best_code, seed=1234, iteration=41)
    assert live.propose(following).response == resumed.propose(following).response
