"""The search layer of one run: per child, which parent, which kind of mutation, which strategy and notes, and whether
the child is novel enough to evaluate; per outcome, what the strategies and the bandits learn.

``SearchEngine`` lives in the driver (``evolve.breeding`` calls ``begin``, ``pick_parent`` and ``finish`` for each
child, in iteration order); ``SearchMutator`` wraps the run's mutator so that the loop's existing seams carry the
rest: ``propose`` (in the mutation threads) makes the crossover and checks novelty against the snapshot taken when
the child was planned, and ``observe`` (called by the loop for every integrated child, and replayed from the archive
on resume) feeds the credit. What was chosen for a child is recorded with it, in its ``llm`` column under
``"search"``: the parent-selection policy and rate, the mutation kind, the strategy, the bandit's arms and the
novelty verdict.

**Determinism.** Every choice is a function of a generator seeded from ``(run seed, iteration)`` and of state updated
in integration order. Meta steps (a new strategy, new notes) are due at fixed iterations; with ``--deterministic``
the driver waits for them (so the children planned after one see it whatever the timing), otherwise they run in a
background thread and take effect when they arrive. Each is recorded as an event whose id is derived from its
iteration, so a resumed run reuses it instead of paying for it again, and counts its calls against the budgets.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from evolve.blocks import evolvable_text
from evolve.edits import apply_response
from evolve.llm.prompts import messages_json
from evolve.mutators.base import (
    MutationOutcome,
    MutationRequest,
    Mutator,
    MutatorStopped,
    ProgramView,
    Proposal,
)
from evolve.search.adaptive import IslandBandits, clamp_mix, draw_kind
from evolve.search.crossover import literal_crossover
from evolve.search.elites import EliteCache
from evolve.search.novelty import IslandSnapshot, NoveltyIndex
from evolve.search.scratchpad import Outcomes, notes_messages, parse_notes
from evolve.search.selection import ParentSelector
from evolve.search.settings import SearchConfigError, SearchSettings
from evolve.search.strategies import Strategy, StrategyPool, credit, generation_messages, parse_strategy
from evolve.types import Status, program_id_for

SEARCH_SALT = 0x5EA4C4  # separates the search's draws from the iteration's main stream
OFFLINE_KINDS = ("diff", "crossover")  # a mutator without an LLM: its own edit, or the literal crossover
EVENT_KINDS = ("strategy", "strategy_fitness", "scratchpad")

RecordEvent = Callable[[str, Mapping[str, Any], int, str], None]  # (kind, data, iteration, event_id)


@dataclass(frozen=True)
class SearchContext:
    """What the search layer hands itself through a request (``MutationRequest.search``)."""

    metadata: dict[str, Any]
    novelty: IslandSnapshot | None = None


@dataclass
class ChildPlan:
    """The choices made for one child before its parent is known."""

    iteration: int
    island: int
    rng: np.random.Generator
    exploitation: float
    kind: str = ""
    strategy: Strategy | None = None
    level: int | None = None
    kind_arm: int | None = None
    source: str = "fixed"  # where the rate and kind come from: "fixed", "bandit" or "strategy"


@dataclass
class _Pending:
    kind: str  # "strategy" or "scratchpad"
    iteration: int
    messages: list[dict[str, str]]
    parent: str | None
    future: cf.Future[Any] | None = None
    result: Any = None


@dataclass
class _Counters:
    generated: int = 0
    failed: int = 0
    notes: int = 0
    not_novel: int = 0
    crossovers_without_partner: int = 0
    offline_crossovers: int = 0
    novelty_errors: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class SearchEngine:
    """Driver-side state of the search choices of one run (see the module docstring). ``settings`` must have passed
    ``check_search`` for ``mutator`` (once per run, where they are resolved)."""

    def __init__(self, settings: SearchSettings, *, mutator: Any, islands: int, run_seed: int,
                 database_rate: float, sign: float, deterministic: bool, description: str, metric: str,
                 direction: str, language: str, record_event: RecordEvent,
                 load_events: Callable[[], Iterable[dict[str, Any]]] | None = None,
                 best_views: Callable[[], Iterable[ProgramView]] = lambda: (),
                 report: Callable[[str], None] = lambda _: None, capacity: int = 4096):
        self.settings = settings
        self.mutator = mutator
        self.islands = islands
        self.run_seed = run_seed
        self.database_rate = database_rate
        self.sign = sign
        self.deterministic = deterministic
        self.description, self.metric, self.direction, self.language = description, metric, direction, language
        self.record_event = record_event
        self.load_events = load_events
        self.best_views = best_views
        self.report = report
        self.mix = settings.mix
        self.selector = ParentSelector(settings.parent_selection, weighted_lambda=settings.weighted_lambda,
                                       power_alpha=settings.power_alpha, sign=sign)
        adaptive = settings.adaptive
        self.bandits = IslandBandits(adaptive, tuple(self.mix), islands) if adaptive.enabled else None
        self.pool = StrategyPool(settings.strategies.population, settings.strategies.prior) \
            if settings.strategies.enabled else None
        self.outcomes = Outcomes()
        self.notes = ""
        self.novelty = _novelty_index(settings, mutator, capacity)
        self.counters = _Counters()
        self._live = False
        self._recorded: dict[str, dict[str, Any]] = {}  # events of an earlier session, by id, not yet adopted
        self._pending: dict[str, _Pending] = {}
        self._executor: cf.ThreadPoolExecutor | None = None
        self._elites = EliteCache(sign)

    # -- per child, in the driver -------------------------------------------------------------------------------------
    def begin(self, iteration: int, island: int) -> ChildPlan:
        """Meta steps due now, then the strategy, the exploitation rate and the kind of this child."""
        if not self._live:
            self._start(iteration)
        self._meta_steps(iteration)
        rng = np.random.default_rng([self.run_seed, iteration, SEARCH_SALT])
        rate = self.settings.exploitation if self.settings.exploitation is not None else self.database_rate
        plan = ChildPlan(iteration, island, rng, rate)
        if self.pool is not None:
            plan.strategy = self.pool.choose(rng)
        if self.bandits is not None:
            choice = self.bandits.choose(island, rng)
            plan.exploitation, plan.level, plan.kind, plan.kind_arm = (choice.exploitation, choice.level,
                                                                       choice.kind, choice.kind_arm)
            plan.source = "bandit"
            params = plan.strategy.params if plan.strategy is not None else {}
            if "exploitation" in params:
                plan.exploitation, plan.level, plan.source = float(params["exploitation"]), None, "strategy"
            if "mix" in params and self.mix:
                mix = clamp_mix(params["mix"], self.mix, self.settings.adaptive.min_share)
                plan.kind, plan.kind_arm, plan.source = draw_kind(mix, float(rng.random())), None, "strategy"
        elif self.mix:
            plan.kind = draw_kind(self.mix, float(rng.random()))
        return plan

    def pick_parent(self, plan: ChildPlan, db: Any, rng: np.random.Generator) -> ProgramView:
        island = plan.island
        return self.selector.pick(lambda: self._elites.breedable(db, island, plan.iteration), rng, plan.exploitation,
                                  lambda r: db.sample_parent(island, r), self.database_rate)

    def finish(self, plan: ChildPlan, request: MutationRequest, db: Any) -> MutationRequest:
        """The request with this child's search choices and the context its proposal needs."""
        parent = request.parent
        self.selector.note_child(parent.program_id, lambda pid: db.view(pid) is not None)
        kind, partner = plan.kind, None
        if kind == "crossover":
            partner = self._partner(plan, parent, db)
            if partner is None:
                kind = "diff"
                self.counters.crossovers_without_partner += 1
        if kind:
            self.counters.kinds[kind] = self.counters.kinds.get(kind, 0) + 1
        metadata: dict[str, Any] = {
            "iteration": plan.iteration, "island": plan.island, "parent": parent.program_id,
            "policy": self.settings.parent_selection, "exploitation": round(plan.exploitation, 6),
            "kind": kind, "source": plan.source,
        }
        if partner is not None:
            metadata["partner"] = partner.program_id
        if plan.strategy is not None:
            metadata["strategy"] = plan.strategy.id
        if plan.level is not None:
            metadata["level"] = plan.level
        if plan.kind_arm is not None:
            metadata["kind_arm"] = plan.kind_arm
        snapshot = None
        if self.novelty is not None:
            try:
                elites = self._elites.get(db, plan.island, plan.iteration)
                snapshot = self.novelty.snapshot(plan.island, (parent.program_id, parent.code), elites.ids,
                                                 elites.codes)
            except Exception as exc:  # noqa: BLE001 - an embeddings endpoint failing: this child goes unchecked
                self.counters.novelty_errors += 1
                metadata["novelty_error"] = f"{type(exc).__name__}: {exc}"
        return replace(request, kind=kind, partner=partner,
                       strategy=plan.strategy.text if plan.strategy is not None else "",
                       scratchpad=self.notes, search=SearchContext(metadata, snapshot))

    def _partner(self, plan: ChildPlan, parent: ProgramView, db: Any) -> ProgramView | None:
        """The second parent: another elite of the island, by the selection weights; else another island's best."""
        elites = self._elites.breedable(db, plan.island, plan.iteration)
        keep = [i for i, pid in enumerate(elites.ids) if pid != parent.program_id]
        if keep:
            weights = self.selector.weights([elites.ids[i] for i in keep], elites.fitness[keep])
            return elites.views[keep[int(plan.rng.choice(len(keep), p=weights / weights.sum()))]]
        found = db.inspirations(plan.island, 1, plan.rng, exclude=parent.program_id)
        return found[0] if found else None

    # -- outcomes (the loop's observe seam) ---------------------------------------------------------------------------
    def observe(self, metadata: Mapping[str, Any] | None, outcome: MutationOutcome) -> None:
        if not isinstance(metadata, Mapping):
            return
        if not self._live and isinstance(metadata.get("parent"), str):
            self.selector.children[metadata["parent"]] += 1  # a resume's replay: counted again as made
        improved = credit(outcome.status, outcome.parent_fitness, outcome.child_fitness)
        island = metadata.get("island")
        if self.bandits is not None and isinstance(island, int):
            self.bandits.observe(island, _int(metadata.get("level")), _int(metadata.get("kind_arm")), improved)
        score = outcome.child_fitness * self.sign if outcome.child_fitness is not None else None
        summary = {"iteration": metadata.get("iteration"), "strategy": metadata.get("strategy"),
                   "kind": metadata.get("kind", ""), "status": outcome.status, "score": score,
                   "improved": improved, "why": " ".join(outcome.edit_error.split())[:160]}
        self.outcomes.add(summary)
        strategy = metadata.get("strategy")
        if self.pool is not None and isinstance(strategy, str):
            self.pool.observe(strategy, outcome.status, improved, summary)

    # -- meta steps -----------------------------------------------------------------------------------------------
    def _start(self, iteration: int) -> None:
        """First child of this session: an earlier session's strategies and notes come back from the events."""
        self._live = True
        events = list(self.load_events()) if self.load_events is not None else []
        calls: list[dict[str, Any]] = []
        for event in events:
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            calls += [c for c in data.get("calls") or () if isinstance(c, dict)]
            if event.get("kind") in ("strategy", "scratchpad"):
                self._recorded[str(event.get("event_id"))] = {**data, "_iteration": int(event.get("iteration", 0))}
        restore = getattr(self.mutator, "restore", None)
        if calls and restore is not None:
            restore([{"calls": calls}])  # meta calls count against the run's budgets, as children's calls do
        for event_id, data in sorted(self._recorded.items(), key=lambda kv: (kv[1]["_iteration"], kv[0])):
            if data["_iteration"] < iteration or event_id.startswith("strategy:seed"):
                self._adopt_recorded(event_id)
        if self.pool is not None and not self.pool.all:
            for i, text in enumerate(self.settings.strategies.seeds):
                seed = Strategy(id=f"seed-{i}", text=text, iteration=0)
                self.pool.add(seed)
                self.record_event("strategy", seed.to_data(list(self.pool.active)), 0, f"strategy:{seed.id}")

    def _adopt_recorded(self, event_id: str) -> None:
        data = self._recorded.pop(event_id, None)
        if data is None:
            return
        if event_id.startswith("strategy:") and self.pool is not None:
            if data.get("adopted", True) and data.get("id"):
                self.pool.restore(Strategy.from_data(data), [str(i) for i in data.get("active_after") or []])
        elif event_id.startswith("scratchpad:") and data.get("adopted", True):
            self.notes = str(data.get("notes", ""))

    def _meta_steps(self, iteration: int) -> None:
        for pending in list(self._pending.values()):
            if pending.future is not None and pending.future.done():
                self._adopt(pending)
        due = []
        every = self.settings.strategies.every
        if self.pool is not None and iteration % every == 0:
            due.append("strategy")
        if self.settings.scratchpad.every and iteration % self.settings.scratchpad.every == 0:
            due.append("scratchpad")
        for kind in due:
            event_id = f"{kind}:{_meta_id(kind, iteration)}"
            if event_id in self._recorded:
                self._adopt_recorded(event_id)  # made by an earlier session: not paid for twice
                continue
            if kind in self._pending:
                continue  # the previous one has not come back yet (free mode)
            pending = self._ask(kind, iteration)
            if self.deterministic or pending.future is None:
                self._adopt(pending)

    def _ask(self, kind: str, iteration: int) -> _Pending:
        if kind == "strategy":
            assert self.pool is not None
            ranked = self.pool.ranked()
            adaptive = self.settings.adaptive
            messages = generation_messages(
                self.pool, description=self.description, metric=self.metric, direction=self.direction,
                max_chars=self.settings.strategies.max_chars,
                exploitation_range=adaptive.exploitation if adaptive.enabled else None, kinds=tuple(self.mix),
                notes=self.notes)
            pending = _Pending(kind, iteration, messages, ranked[0] if ranked else None)
        else:
            messages = notes_messages(description=self.description, metric=self.metric, direction=self.direction,
                                      best=list(self.best_views()), outcomes=self.outcomes, notes=self.notes,
                                      max_chars=self.settings.scratchpad.max_chars)
            pending = _Pending(kind, iteration, messages, None)
        seed = int(np.random.default_rng([self.run_seed, iteration, SEARCH_SALT, len(kind)]).integers(2**62))
        call = self.mutator.meta_call
        self._pending[kind] = pending
        if self.deterministic:
            pending.result = _call(call, messages, seed, kind)
        else:
            if self._executor is None:
                self._executor = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="evolve-search")
            pending.future = self._executor.submit(_call, call, messages, seed, kind)
        return pending

    def _adopt(self, pending: _Pending) -> None:
        self._pending.pop(pending.kind, None)
        result = pending.future.result() if pending.future is not None else pending.result
        text, model, calls, error = result
        if error:
            self.report(f"search: the {pending.kind} call at iteration {pending.iteration} failed: {error}")
        prompt = messages_json(pending.messages)
        event_id = f"{pending.kind}:{_meta_id(pending.kind, pending.iteration)}"
        if pending.kind == "strategy":
            assert self.pool is not None
            s = self.settings
            parsed = parse_strategy(text or "", s.strategies.max_chars,
                                    s.adaptive.exploitation if s.adaptive.enabled else None, tuple(self.mix),
                                    s.adaptive.min_share)
            strategy = Strategy(id=_meta_id("strategy", pending.iteration), text=parsed[0],
                                iteration=pending.iteration, parent=pending.parent, origin="llm", params=parsed[1],
                                ignored=parsed[2], prompt=prompt, answer=text or "", model=model, calls=calls)
            if strategy.text:
                retired = self.pool.add(strategy)
                self.counters.generated += 1
                data = {**strategy.to_data(list(self.pool.active)), "retired": retired}
            else:
                self.counters.failed += 1
                data = {**strategy.to_data(list(self.pool.active)), "adopted": False,
                        "error": error or "no strategy in the answer"}
            self.record_event("strategy", data, pending.iteration, event_id)
            self.record_event("strategy_fitness", self.pool.snapshot(), pending.iteration,
                              f"strategy_fitness:{pending.iteration}")
        else:
            notes = parse_notes(text or "", self.settings.scratchpad.max_chars)
            adopted = bool(notes)
            if adopted:
                self.notes = notes
                self.counters.notes += 1
            self.record_event("scratchpad", {"notes": notes, "adopted": adopted, "prompt": prompt,
                                             "answer": text or "", "model": model, "calls": list(calls),
                                             "error": error}, pending.iteration, event_id)

    # -- proposals (mutation threads) --------------------------------------------------------------------------------
    def judge(self, child_code: str, nearest_code: str, seed: int) -> tuple[bool, str, tuple[dict[str, Any], ...]]:
        """Ask the LLM whether a borderline child is a real variation: ``(novel, answer, calls)``."""
        messages = judge_messages(child_code, nearest_code)
        answer = self.mutator.meta_call(messages, seed, "novelty_judge")
        text = (answer.text or "").upper()
        copy = "COPY" in text or "NOT NOVEL" in text
        return (not copy), (answer.text or "")[:200], tuple(answer.calls)

    def close(self) -> None:
        """End of the session: a meta step that already came back is still recorded (it was paid for); one still
        in flight is abandoned."""
        for pending in list(self._pending.values()):
            if pending.future is not None and pending.future.done():
                try:
                    self._adopt(pending)
                except Exception as exc:  # noqa: BLE001 - the archive may be failing already (a full disk)
                    self.report(f"search: could not record the {pending.kind} of iteration {pending.iteration}: "
                                f"{exc}")
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        c = self.counters
        data: dict[str, Any] = {"policy": self.settings.parent_selection, "kinds": dict(c.kinds)}
        if self.pool is not None:
            data["strategies"] = {"generated": c.generated, "failed": c.failed, "active": [
                {"id": sid, "fitness": round(self.pool.fitness(sid), 4), "children": self.pool.stat(sid).children,
                 "improved": self.pool.stat(sid).improved} for sid in self.pool.ranked()]}
        if self.settings.scratchpad.every:
            data["scratchpad"] = {"versions": c.notes, "chars": len(self.notes)}
        if self.novelty is not None:
            data["novelty"] = {**self.novelty.stats(), "errors": c.novelty_errors}
        if self.bandits is not None:
            data["adaptive"] = self.bandits.snapshot()
        if c.crossovers_without_partner or c.offline_crossovers:
            data["crossover"] = {"offline": c.offline_crossovers, "without_partner": c.crossovers_without_partner}
        return data


def _call(call: Callable[..., Any], messages: list[dict[str, str]], seed: int, kind: str,
          ) -> tuple[str | None, str, tuple[dict[str, Any], ...], str]:
    """``(text, model, calls, error)``; a stopped mutator or a failed call is an error here, never an exception:
    the next proposal stops the run if it must."""
    try:
        answer = call(messages, seed, kind)
    except MutatorStopped as exc:
        return None, "", (), f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - a meta step must never stop a run
        return None, "", (), f"{type(exc).__name__}: {exc}"
    error = "" if answer.text else "no answer"
    return answer.text, answer.model, tuple(answer.calls), error


def _meta_id(kind: str, iteration: int) -> str:
    return f"s{iteration}" if kind == "strategy" else str(iteration)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_search(settings: SearchSettings, mutator: Any) -> None:
    """Refuse settings the run's mutator cannot honour (raises ``SearchConfigError``)."""
    errors = []
    name = getattr(mutator, "name", type(mutator).__name__)
    kinds = tuple(getattr(mutator, "kinds", OFFLINE_KINDS))
    for kind in settings.mix:
        if kind not in kinds:
            errors.append(("problem.toml [search].mutation_mix", f"the {name} mutator cannot make {kind!r} children "
                                                                 f"(it makes: {', '.join(kinds)})"))
    if settings.needs_llm and not callable(getattr(mutator, "meta_call", None)):
        errors.append(("problem.toml [search]", f"{', '.join(settings.needs_llm)} need(s) the llm mutator, not "
                                                f"{name}"))
    if errors:
        raise SearchConfigError(errors)


def _novelty_index(settings: SearchSettings, mutator: Any, capacity: int) -> NoveltyIndex | None:
    novelty = settings.novelty
    if not novelty.enabled:
        return None
    embedder = None
    if novelty.method == "embedding":
        model = novelty.embedding_model

        class _Endpoint:
            def embed(self, texts: Any) -> list[list[float]]:
                return mutator.embed(model, list(texts))

        embedder = _Endpoint()
    return NoveltyIndex(novelty.method, novelty.threshold, judge_band=novelty.judge_band,
                        permutations=novelty.permutations, shingle=novelty.shingle, embedder=embedder,
                        capacity=capacity)


JUDGE_SYSTEM = """You judge whether a proposed change to a program is a real variation or essentially a copy. A copy \
behaves the same for every purpose that matters (renamed variables, reformatted code, comments, a constant moved by \
a negligible amount). Answer with one word: NOVEL or COPY."""


def judge_messages(child_code: str, nearest_code: str) -> list[dict[str, str]]:
    user = (f"# Existing program\n```\n{evolvable_text(nearest_code).strip()}\n```\n\n"
            f"# Proposed program\n```\n{evolvable_text(child_code).strip()}\n```\n\nNOVEL or COPY?")
    return [{"role": "system", "content": JUDGE_SYSTEM + "\n"}, {"role": "user", "content": user}]


class SearchMutator:
    """The run's mutator with the search layer around it (everything else is delegated to the mutator)."""

    def __init__(self, inner: Mutator, engine: SearchEngine):
        self.inner = inner
        self.engine = engine
        if engine.novelty is not None and engine.settings.novelty.judge_band > 0:
            engine.novelty.judge_band = engine.settings.novelty.judge_band
            engine.novelty.judge = self._judge
        self._judge_calls: dict[int, tuple[dict[str, Any], ...]] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "engine"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _judge(self, child_code: str, nearest_code: str, seed: int) -> tuple[bool, str]:
        novel, answer, calls = self.engine.judge(child_code, nearest_code, seed)
        self._judge_calls[seed] = calls
        return novel, answer

    def propose(self, request: MutationRequest) -> Proposal:
        context = request.search
        if not isinstance(context, SearchContext):
            return self.inner.propose(request)
        metadata = dict(context.metadata)
        proposal = None
        if request.kind == "crossover" and request.partner is not None and \
                "crossover" not in tuple(getattr(self.inner, "kinds", ())):
            text = literal_crossover(request.parent.code, request.partner.code, request.partner.program_id,
                                     request.language, request.seed)
            if text is not None:
                proposal = Proposal(response=text, mutator=self.inner.name)
                self.engine.counters.offline_crossovers += 1
            else:
                metadata["kind"] = "diff"  # nothing to cross: the mutator's own edit
        if proposal is None:
            proposal = self.inner.propose(request)
        llm = dict(proposal.llm)
        if proposal.no_answer:
            return replace(proposal, llm={**llm, "search": metadata})
        child, edit_error = proposal.child_code, proposal.edit_error
        if child is None and not (llm.get("error") or edit_error):
            result = apply_response(request.parent.code, proposal.response, getattr(self.inner, "edit_mode", "diff"))
            child, edit_error = result.child, result.error  # the driver records this error as it is
        if child and context.novelty is not None and self.engine.novelty is not None:
            try:
                verdict = self.engine.novelty.check(context.novelty, program_id_for(child), child, request.seed)
                metadata["novelty"] = verdict.to_dict()
            except Exception as exc:  # noqa: BLE001 - an embeddings call that failed: the child is not judged
                metadata["novelty"] = {"error": f"{type(exc).__name__}: {exc}", "novel": True}
            calls = self._judge_calls.pop(request.seed, ())
            if calls:
                llm = _with_calls(llm, calls)
        llm["search"] = metadata
        return replace(proposal, llm=llm, child_code=child if child else proposal.child_code, edit_error=edit_error)

    def observe(self, proposal: Proposal, outcome: MutationOutcome) -> None:
        observe = getattr(self.inner, "observe", None)
        # A near-copy says nothing about what an offline operator changed (tune would blame its literals); a
        # mutator that wants it (the LLM's model bandit: a model that writes copies) says so.
        wanted = outcome.status != Status.NOT_NOVEL.value or getattr(self.inner, "observes_not_novel", False)
        if observe is not None and wanted:
            observe(proposal, outcome)
        llm = proposal.llm if isinstance(proposal.llm, Mapping) else {}
        self.engine.observe(llm.get("search"), outcome)

    def stats(self) -> dict[str, Any]:
        inner = getattr(self.inner, "stats", None)
        data = dict(inner()) if inner is not None else {}
        data["search"] = self.engine.stats()
        return data

    def close(self) -> None:
        self.engine.close()
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def _with_calls(llm: dict[str, Any], calls: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """A child's audit with extra calls made for it (the novelty judge), totals included."""
    out = dict(llm)
    out["calls"] = [*list(llm.get("calls") or []), *calls]
    for key in ("prompt_tokens", "completion_tokens"):
        out[key] = int(llm.get(key, 0) or 0) + sum(int(c.get(key, 0) or 0) for c in calls)
    out["cost"] = float(llm.get("cost", 0.0) or 0.0) + sum(float(c.get("cost", 0.0) or 0.0) for c in calls)
    out["tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


def is_not_novel(proposal: Proposal | None) -> dict[str, Any] | None:
    """The novelty verdict of a proposal when it says the child is not novel, else None."""
    if proposal is None or not isinstance(proposal.llm, Mapping):
        return None
    verdict = (proposal.llm.get("search") or {}).get("novelty") if isinstance(proposal.llm.get("search"), Mapping) \
        else None
    return dict(verdict) if isinstance(verdict, Mapping) and verdict.get("novel") is False else None


def describe_verdict(verdict: Mapping[str, Any]) -> str:
    judged = f"; the judge said {json.dumps(verdict['judge'])}" if verdict.get("judge") else ""
    return (f"too similar to program {verdict.get('nearest')} (similarity {verdict.get('similarity')} by "
            f"{verdict.get('method')}){judged}")
