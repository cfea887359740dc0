"""The offline mutators: ScriptedMutator (the LLM stand-in) and TuneMutator (numeric literal tuning)."""

from __future__ import annotations

import io
import threading
import tokenize
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from evolve.blocks import find_blocks
from evolve.edits import EditRejection, apply_response
from evolve.mutators.base import MutationOutcome, MutationRequest, Mutator, MutatorStopped, ProgramView
from evolve.mutators.scripted import ScriptedMutator
from evolve.mutators.tune import TuneMutator, find_literals, perturb

ROOT = Path(__file__).resolve().parents[1]
CIRCLE_DIR = ROOT / "problems" / "circle_packing"
CIRCLE = (CIRCLE_DIR / "initial_program.py").read_text()

MINIMIZE = '''"""Minimize a 1-D function by pattern search."""

# EVOLVE-BLOCK-START
STEP = 0.5
SHRINK = 0.5


def minimize(f, x):
    step = STEP
    for _ in range(60):
        if f(x - step) < f(x):
            x -= step
        elif f(x + step) < f(x):
            x += step
        else:
            step *= SHRINK
    return x
# EVOLVE-BLOCK-END


def run():
    return minimize(lambda x: (x - 3.7) ** 2, 0.0)
'''

CUDA = '''#include <cuda_fp16.h>
#define OUTSIDE 7
// EVOLVE-BLOCK-START
#define TILE 16
__global__ void k(const float4* a, float* out, int n) {
    /* unroll 4 times */
    float acc = 0.0f;  // start at 1.5
    int x1 = threadIdx.x * 2u;
    const char* s = "3 apples";
    char c = '8';
    unsigned mask = 0xFF;
    out[x1] = acc * 1.5e-3f + 2.;
}
// EVOLVE-BLOCK-END
int tail = 99;
'''


def request(code: str, seed: int, iteration: int = 0, language: str = "python") -> MutationRequest:
    return MutationRequest(parent=ProgramView(program_id="p", code=code), iteration=iteration, seed=seed,
                           language=language)


def literal_changes(parent: str, child: str) -> int | None:
    """How many literals differ between parent and child, or None if anything but (signed) literals changed."""
    def skeleton(code):
        return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type != tokenize.NUMBER and t.string != "-"]
    before, after = find_literals(parent), find_literals(child)
    if skeleton(parent) != skeleton(child) or len(before) != len(after):
        return None
    return sum(a.text != b.text for a, b in zip(before, after, strict=True))


# --- ScriptedMutator ------------------------------------------------------------------------------------------


def test_both_satisfy_the_mutator_protocol():
    assert isinstance(ScriptedMutator(), Mutator)
    assert isinstance(TuneMutator(), Mutator)
    assert TuneMutator().propose(request(CIRCLE, 1)).mutator == "tune"
    assert ScriptedMutator(name="fake").propose(request(CIRCLE, 1)).mutator == "fake"


def test_script_replays_by_iteration_and_cycles():
    mutator = ScriptedMutator(["a", "b", "c"])
    answers = [mutator.propose(request(MINIMIZE, seed=99, iteration=i)).response for i in (4, 0, 2, 1, 3)]
    assert answers == ["b", "a", "c", "b", "a"]


def test_script_without_cycle_stops():
    mutator = ScriptedMutator(["a"], cycle=False)
    assert mutator.propose(request(MINIMIZE, 0, iteration=0)).response == "a"
    with pytest.raises(MutatorStopped):
        mutator.propose(request(MINIMIZE, 0, iteration=1))


def test_script_rejects_a_bare_string_and_empty_script():
    with pytest.raises(TypeError):
        ScriptedMutator("just one answer")
    with pytest.raises(ValueError):
        ScriptedMutator([])


def test_script_placeholders_and_braces_in_code():
    script = [
        "```python\n{parent_block}\n```",  # a rewrite that changes nothing
        "```python\n{parent_block}\nCACHE = {}  # iteration {iteration}, seed {seed}\n```",
        "<<<<<<< SEARCH\nSTEP = 0.5\n=======\nSTEP = 0.1\n",  # malformed on purpose
    ]
    mutator = ScriptedMutator(script)
    outcomes = [apply_response(MINIMIZE, mutator.propose(request(MINIMIZE, 5, iteration=i)).response) for i in range(3)]
    assert outcomes[0].reason is EditRejection.UNCHANGED
    assert outcomes[1].ok and "CACHE = {}  # iteration 1, seed 5\n# EVOLVE-BLOCK-END" in outcomes[1].child
    assert outcomes[2].reason is EditRejection.MALFORMED


@pytest.mark.parametrize(("code", "language"), [(CIRCLE, "python"), (MINIMIZE, "python"), (CUDA, "cuda")],
                         ids=["circle", "minimize", "cuda"])
def test_generated_edits_apply_and_vary(code, language):
    mutator = ScriptedMutator()
    children, block_counts = set(), Counter()
    for seed in range(200):
        answer = mutator.propose(request(code, seed, iteration=seed, language=language)).response
        result = apply_response(code, answer)
        assert result.ok, f"seed {seed}: {result.reason}: {result.message}\n{answer}"
        children.add(result.child)
        block_counts[result.blocks_applied] += 1
    assert len(children) >= 150
    assert block_counts[1] > 0 and block_counts[2] > 0


def test_generated_edits_chain_over_many_generations():
    """A lineage of 150 scripted children: each one is a valid parent for the next."""
    mutator, code = ScriptedMutator(), MINIMIZE
    for iteration in range(150):
        result = apply_response(code, mutator.propose(request(code, 10_000 + iteration, iteration)).response)
        assert result.ok, result.message
        code = result.child
    assert len(find_blocks(code)) == 1
    assert code.endswith(MINIMIZE[MINIMIZE.index("# EVOLVE-BLOCK-END") :])


def test_generated_answers_are_deterministic_and_call_order_free():
    mutator = ScriptedMutator()
    requests = [request(CIRCLE, seed) for seed in range(40)]
    forward = [mutator.propose(r).response for r in requests]
    results: dict[int, str] = {}

    def work(indices):
        for i in indices:
            results[i] = mutator.propose(requests[i]).response

    threads = [threading.Thread(target=work, args=(range(k, 40, 4)[::-1],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(40)] == forward
    assert len(set(forward)) > 30


def test_generated_answer_on_an_empty_block_is_no_edit():
    code = "x = 1\n# EVOLVE-BLOCK-START\n\n# EVOLVE-BLOCK-END\n"
    answer = ScriptedMutator().propose(request(code, 1)).response
    assert apply_response(code, answer).reason is EditRejection.NO_EDIT_FOUND


# --- literal discovery ----------------------------------------------------------------------------------------


def test_python_literals_only_inside_blocks_and_outside_names_strings_comments():
    code = 'N2 = 5\n# EVOLVE-BLOCK-START\nx1 = 3  # 4 apples\ns = "6 pears"\ny = 0.25 + 1j + 0x1F + 1_000\n# EVOLVE-BLOCK-END\nz = 8\n'
    assert [(lit.line, lit.text) for lit in find_literals(code)] == [(2, "3"), (4, "0.25"), (4, "1_000")]


def test_python_fallback_scanner_on_untokenizable_code():
    code = "# EVOLVE-BLOCK-START\nrows = [5, 6\ns = '''7\n8'''  # 9\nf = 0.5\n# EVOLVE-BLOCK-END\n"
    assert [lit.text for lit in find_literals(code)] == ["5", "6", "0.5"]


def test_c_like_literals():
    found = [(lit.text, lit.is_float) for lit in find_literals(CUDA, "cuda")]
    assert found == [("16", False), ("0.0f", True), ("2u", False), ("1.5e-3f", True), ("2.", True)]


# --- perturbation ---------------------------------------------------------------------------------------------


def test_perturb_keeps_kind_and_moves_by_scale():
    rng = np.random.default_rng(0)
    ints = find_literals("X = 5\nZ = 0\nW = 4000\n")
    floats = find_literals("A = 0.9\nB = 0.0\nC = 1e-09\nD = -250.0\n")
    for _ in range(300):
        for lit in ints:
            new = perturb(lit, rng, 0.1, 1e-3)
            assert new.lstrip("-").isdigit() and int(new) != int(lit.value)
            assert abs(int(new) - lit.value) <= max(1.6 * abs(lit.value), 20)
        for lit in floats:
            new = perturb(lit, rng, 0.1, 1e-3)
            value = float(new)
            assert ("." in new or "e" in new) and value != lit.value and new != "-0.0"
            assert len(new) <= 12, new
            # scale-aware: within ~5 standard deviations of max(0.1 |x|, floor) at the boldest factor
            assert abs(value - lit.value) < 5 * 3.2 * max(0.1 * abs(lit.value), 1e-3)


def test_signed_literals_and_zero_crossing():
    code = "# EVOLVE-BLOCK-START\nB = -2.0\nc = a - 1\nd = a[:-1]\ne = f(x, -3)\ng = (a\n     - 4)\n# EVOLVE-BLOCK-END\n"
    found = [(lit.text, lit.value) for lit in find_literals(code)]
    assert found == [("-2.0", -2.0), ("1", 1.0), ("-1", -1.0), ("-3", -3.0), ("4", 4.0)]
    near_zero = find_literals("x = -0.0005\n")[0]
    rng = np.random.default_rng(1)
    signs = {float(perturb(near_zero, rng, 0.1, 1e-3)) > 0 for _ in range(100)}
    assert signs == {True, False}


def test_tune_never_writes_double_minus_or_glues_names():
    code = "// EVOLVE-BLOCK-START\nint f(int a) { if (a) return-1; return a-1 + 0; }\n// EVOLVE-BLOCK-END\n"
    lits = find_literals(code, "c")
    assert [lit.text for lit in lits] == ["-1", "1", "0"]
    mutator = TuneMutator(scale=3.0, literals_per_edit=3)
    for seed in range(200):
        child = apply_response(code, mutator.propose(request(code, seed, language="c")).response).unwrap()
        assert "--" not in child.replace("// EVOLVE", "")
        assert "return" in child and "returna" not in child
        assert not any(f"return{d}" in child for d in "0123456789")


def test_perturb_keeps_c_suffixes():
    rng = np.random.default_rng(3)
    half, unsigned = find_literals("// EVOLVE-BLOCK-START\nfloat h = 0.5f; unsigned u = 8u;\n// EVOLVE-BLOCK-END\n",
                                   "c")
    for _ in range(50):
        assert perturb(half, rng, 0.2, 1e-3).endswith("f")
        new = perturb(unsigned, rng, 0.2, 1e-3)
        assert new.endswith("u") and new[:-1].isdigit()


# --- TuneMutator ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [CIRCLE, MINIMIZE], ids=["circle", "minimize"])
def test_tune_answers_apply_and_touch_only_literals(code):
    mutator = TuneMutator(literals_per_edit=4)
    changed_counts = Counter()
    for seed in range(150):
        answer = mutator.propose(request(code, seed)).response
        result = apply_response(code, answer)
        assert result.ok, f"{result.reason}: {result.message}\n{answer}"
        changes = literal_changes(code, result.child)
        assert changes is not None, answer
        changed_counts[changes] += 1
    assert set(changed_counts) <= {1, 2, 3, 4}
    assert changed_counts[1] > 40 and sum(changed_counts[k] for k in (2, 3, 4)) > 40


def test_tune_on_cuda_changes_only_block_literals():
    mutator = TuneMutator()
    for seed in range(60):
        result = apply_response(CUDA, mutator.propose(request(CUDA, seed, language="cuda")).response)
        assert result.ok, result.message
        for keep in ("cuda_fp16.h", "OUTSIDE 7", "x1 =", '"3 apples"', "'8'", "0xFF", "tail = 99", "unroll 4",
                     "start at 1.5", "float4"):
            assert keep in result.child


def test_tune_is_deterministic_per_seed():
    mutator = TuneMutator()
    assert mutator.propose(request(CIRCLE, 42)) == mutator.propose(request(CIRCLE, 42, iteration=9))
    assert len({mutator.propose(request(CIRCLE, s)).response for s in range(30)}) >= 25  # small int moves may coincide


def test_tune_without_literals_is_no_edit():
    code = "# EVOLVE-BLOCK-START\ndef f(x):\n    return x\n# EVOLVE-BLOCK-END\nN = 3\n"
    answer = TuneMutator().propose(request(code, 0)).response
    assert apply_response(code, answer).reason is EditRejection.NO_EDIT_FOUND


def test_tune_rejects_bad_settings():
    with pytest.raises(ValueError):
        TuneMutator(scale=0)
    with pytest.raises(ValueError):
        TuneMutator(literals_per_edit=0)


def _load_check_packing():
    import importlib.util

    spec = importlib.util.spec_from_file_location("circle_evaluator", CIRCLE_DIR / "evaluator.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_packing


def test_tune_hill_climb_improves_circle_packing():
    """40 tune proposals in a greedy hill climb, fed back through ``observe``, beat the shipped seed under the
    trusted geometry check, and most children are valid packings."""
    check_packing = _load_check_packing()

    def sum_of_radii(code: str) -> float | None:
        module = types.ModuleType("candidate")
        try:
            with np.errstate(all="ignore"):  # a child's relaxation may divide by zero: it then fails the check
                exec(compile(code, "candidate", "exec"), module.__dict__)  # offline check of the mutator only
                _, radii = check_packing(module.run_packing())
        except Exception:  # noqa: BLE001 - any failure (wrong output, crash) just loses the proposal
            return None
        return float(radii.sum())

    mutator = TuneMutator()
    best_code, best = CIRCLE, sum_of_radii(CIRCLE)
    assert best == pytest.approx(2.408, abs=1e-3)
    seed_score = best
    valid = 0
    for iteration in range(40):
        proposal = mutator.propose(request(best_code, seed=20_000 + iteration, iteration=iteration))
        result = apply_response(best_code, proposal.response)
        assert result.ok, result.message
        score = sum_of_radii(result.child)
        mutator.observe(proposal, MutationOutcome("ok" if score is not None else "wrong_output", best, score))
        if score is not None:
            valid += 1
            if score > best:
                best_code, best = result.child, score
    assert best > seed_score + 0.02, best
    assert valid >= 30
    assert best_code != CIRCLE


def test_scripted_mutators_are_hashable_values_and_fresh_tune_mutators_answer_alike():
    assert hash(ScriptedMutator(["a", "b"])) == hash(ScriptedMutator(("a", "b")))
    # A tune mutator learns (it is not a value), but two with the same settings and history answer alike.
    assert TuneMutator(scale=0.2).propose(request(CIRCLE, 5)) == TuneMutator(scale=0.2).propose(request(CIRCLE, 5))
