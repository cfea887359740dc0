"""Problems written for OpenEvolve: a folder with ``initial_program.*``, ``evaluator.py`` and ``config.yaml``.

``load_openevolve_problem(folder)`` maps such a folder to a ``Problem`` plus notes for the user on what was mapped
approximately and what was ignored. Nothing in the folder is imported or run here: the evaluator's functions are
found by parsing its source, and the evaluator itself only ever runs inside the sandbox.

How the evaluator runs. OpenEvolve evaluators take a program path and run the candidate in their own process, so
the whole evaluator has to run inside the sandbox: the stage functions of ``evolve.openevolve_evaluator`` call
``Candidate.run_evaluator_in_sandbox`` (the sandbox's in-process mode, enabled for these problems through
``[sandbox] allow_in_process``), and every result is marked ``in_process`` in the archive. A candidate sharing the
evaluator's process can tamper with it; that is how these evaluators were written, and the mark says so.

Mapping (OpenEvolve key -> evolve):

* ``max_iterations`` -> ``[evolution] iterations``; ``database.num_islands`` -> ``islands``;
  ``database.migration_interval`` -> ``migration_interval`` (OpenEvolve counts generations, evolve iterations);
  ``database.exploitation_ratio`` -> ``exploitation``; ``prompt.num_top_programs`` -> ``inspirations``.
* Score: the ``combined_score`` metric, maximized, as in OpenEvolve. When an evaluator returns no
  ``combined_score``, the stage computes it as OpenEvolve does: the mean of the numeric metrics except ``error``.
* Cascade: with ``evaluator.cascade_evaluation`` (default true) and an ``evaluate_stage1`` function, the stages are
  ``stage1`` (+ ``stage2``, + ``stage3`` when defined); ``evaluator.cascade_thresholds[i]`` becomes stage *i*'s
  threshold on ``combined_score``. Difference: OpenEvolve checks the stage-2 threshold on the merged metrics of
  stages 1 and 2; here each stage's threshold sees that stage's own metrics (and its ``combined_score``).
  Otherwise one stage, ``evaluate``. ``evaluator.timeout`` -> each stage's timeout;
  ``evaluator.memory_limit_mb`` -> ``[limits] memory_mb``.
* ``database.feature_dimensions`` with ``feature_bins`` (a number or a per-dimension table) -> ``[[features]]``
  with FIXED ranges, because evolve's cells never drift (OpenEvolve rescales them as values arrive):
  ``complexity`` is the code length in characters over ``[0, max_code_length]`` (default 10000); ``score`` is
  ``combined_score`` over ``[0, 1]``; any other dimension is the evaluator metric of that name over ``[0, 1]``.
  Values outside a range land in the edge bins. To choose ranges, add to ``config.yaml`` (OpenEvolve ignores it)::

      evolve_feature_ranges:
        my_metric: [0.0, 250.0]

  ``diversity`` needs the whole population and is dropped.
* ``llm``: ``models`` (or ``primary_model``/``secondary_model`` with weights), ``temperature``, ``max_tokens``,
  ``top_p`` (sent as a vendor parameter), ``api_base``, ``timeout``, ``retries``, ``retry_delay`` -> ``[llm]``.
  API keys are never taken from a problem folder: use ``OPENAI_API_KEY`` or ``--api-key``. The run uses the
  ``llm`` mutator when models are configured (``--mutator`` overrides it).
* ``prompt.system_message`` -> the problem description given to the model; ``diff_based_evolution: false`` ->
  ``[prompt] mode = "full"``.
* Everything else (checkpoints, logging, population and archive sizes, novelty, LLM feedback, early stopping,
  ``random_seed``: pass ``--seed``) is ignored, and each ignored key is named in the notes.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any

from evolve.problem import LANGUAGES, PROBLEM_FILE, Problem, ProblemError, load_problem, parse_problem

CONFIG_NAMES = ("config.yaml", "config.yml")
EVALUATOR = "evaluator.py"
SCORE_METRIC = "combined_score"
SHIM = Path(__file__).with_name("openevolve_evaluator.py")
STAGE_FUNCTIONS = ("evaluate_stage1", "evaluate_stage2", "evaluate_stage3")
DEFAULT_TIMEOUT = 300.0  # OpenEvolve's evaluator.timeout default
DEFAULT_BINS = 10
DEFAULT_MAX_CODE_LENGTH = 10000
DEFAULT_DIMENSIONS = ("complexity", "diversity")

# Keys we translate (anything else is reported as ignored).
_TOP_MAPPED = {"max_iterations", "llm", "prompt", "database", "evaluator", "diff_based_evolution", "max_code_length",
               "language", "file_suffix", "evolve_feature_ranges"}
_DATABASE_MAPPED = {"num_islands", "migration_interval", "exploitation_ratio", "feature_dimensions", "feature_bins"}
_EVALUATOR_MAPPED = {"timeout", "memory_limit_mb", "cascade_evaluation", "cascade_thresholds"}
_LLM_MAPPED = {"models", "primary_model", "primary_model_weight", "secondary_model", "secondary_model_weight",
               "temperature", "max_tokens", "top_p", "api_base", "timeout", "retries", "retry_delay", "api_key"}
_PROMPT_MAPPED = {"system_message", "num_top_programs"}


def _initial_program(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("initial_program.*") if p.is_file() and p.suffix not in (".pyc", ".orig"))
    known = [p for p in found if p.suffix in LANGUAGES]
    return (known or found or [None])[0]


def is_openevolve_folder(folder: str | Path) -> bool:
    """A folder without ``problem.toml`` that has ``evaluator.py`` and an ``initial_program.*``."""
    folder = Path(folder)
    return (folder.is_dir() and not (folder / PROBLEM_FILE).exists() and (folder / EVALUATOR).is_file()
            and _initial_program(folder) is not None)


def _config(folder: Path, errors: list[tuple[str, str]]) -> tuple[dict[str, Any], str]:
    import yaml

    for name in CONFIG_NAMES:
        path = folder / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                errors.append((name, f"not valid YAML: {exc}"))
                return {}, name
            if data is None:
                return {}, name
            if not isinstance(data, dict):
                errors.append((name, "expected a mapping at the top level"))
                return {}, name
            return data, name
    return {}, ""


def evaluator_functions(path: Path) -> set[str]:
    """Names of the top-level functions an evaluator defines, read from its source (it is not imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in tree.body:  # evaluate = some_callable
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _table(value: Any, where: str, errors: list[tuple[str, str]]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append((where, f"expected a mapping, got {type(value).__name__}"))
        return {}
    return value


def _number(value: Any, where: str, errors: list[tuple[str, str]], kind: type = float,
            positive: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        errors.append((where, f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"))
        return None
    if positive and value <= 0:
        errors.append((where, "must be > 0"))
        return None
    return kind(value)


def _ignored(table: dict[str, Any], mapped: set[str], prefix: str) -> list[str]:
    return [f"{prefix}{k}" for k in table if k not in mapped]


def _features(config: dict[str, Any], database: dict[str, Any], errors: list[tuple[str, str]],
              notes: list[str]) -> list[dict[str, Any]]:
    dims = database.get("feature_dimensions", list(DEFAULT_DIMENSIONS))
    if isinstance(dims, str):
        dims = [dims]
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
        errors.append(("database.feature_dimensions", "expected a list of names"))
        return []
    bins_setting = database.get("feature_bins", DEFAULT_BINS)
    ranges = _table(config.get("evolve_feature_ranges"), "evolve_feature_ranges", errors)
    max_length = _number(config.get("max_code_length", DEFAULT_MAX_CODE_LENGTH), "max_code_length", errors,
                         positive=True) or DEFAULT_MAX_CODE_LENGTH
    features = []
    for dim in dims:
        if dim == "diversity":
            notes.append("feature 'diversity' dropped: it is measured against the whole population, which evolve's "
                         "fixed MAP-Elites cells cannot do")
            continue
        bins = bins_setting.get(dim, DEFAULT_BINS) if isinstance(bins_setting, dict) else bins_setting
        bins = _number(bins, f"database.feature_bins.{dim}", errors, kind=int, positive=True)
        if bins is None:
            continue
        if dim in ranges:
            pair = ranges[dim]
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
                    or not pair[1] > pair[0]):
                errors.append((f"evolve_feature_ranges.{dim}", "expected [min, max] with max > min"))
                continue
            lo, hi = float(pair[0]), float(pair[1])
            how = "from evolve_feature_ranges"
        elif dim == "complexity":
            lo, hi, how = 0.0, float(max_length), "code length in characters, up to max_code_length"
        else:
            lo, hi, how = 0.0, 1.0, "assumed; set evolve_feature_ranges to change it"
        metric = {"complexity": "code_length", "score": SCORE_METRIC}.get(dim, dim)
        features.append({"name": dim, "metric": metric, "min": lo, "max": hi, "bins": min(bins, 1000)})
        notes.append(f"feature {dim!r}: metric {metric!r} in fixed range [{lo:g}, {hi:g}] ({how}), {bins} bins")
    return features


def _llm(llm: dict[str, Any], errors: list[tuple[str, str]], notes: list[str]) -> dict[str, Any]:
    models: list[dict[str, Any]] = []
    raw_models = llm.get("models")
    if isinstance(raw_models, list):
        for i, item in enumerate(raw_models):
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                errors.append((f"llm.models[{i}]", "expected a mapping with a name"))
                continue
            entry = {"name": item["name"]}
            for key in ("weight", "temperature", "max_tokens"):
                if item.get(key) is not None:
                    entry[key] = item[key]
            dropped = sorted(set(item) - {"name", "weight", "temperature", "max_tokens"})
            if dropped:
                notes.append(f"llm.models[{i}]: ignored {', '.join(dropped)}")
            models.append(entry)
    for key in ("primary_model", "secondary_model"):
        name = llm.get(key)
        if isinstance(name, str) and name and all(m["name"] != name for m in models):
            weight = llm.get(f"{key}_weight")
            if weight is None:
                weight = 1.0 if key == "primary_model" else 0.2
            if weight > 0:
                models.append({"name": name, "weight": weight})
    out: dict[str, Any] = {}
    for model in models:
        for key in ("temperature", "max_tokens"):
            if key not in model and llm.get(key) is not None:
                model[key] = llm[key]
        if llm.get("top_p") is not None:
            model["extra_body"] = {"top_p": llm["top_p"]}
        if "weight" in model and (not isinstance(model["weight"], int | float) or model["weight"] <= 0):
            notes.append(f"model {model['name']!r}: weight {model['weight']!r} is not positive; using 1")
            model["weight"] = 1.0
    if models:
        out["models"] = models
    if isinstance(llm.get("api_base"), str) and llm["api_base"]:
        out["api_base"] = llm["api_base"]
    for src, dst in (("timeout", "timeout"), ("retries", "retries"), ("retry_delay", "backoff")):
        if llm.get(src) is not None:
            out[dst] = llm[src]
    if llm.get("api_key"):
        notes.append("llm.api_key ignored: evolve never takes keys from a problem folder; set OPENAI_API_KEY or "
                     "pass --api-key")
    return out


def openevolve_problem_data(folder: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The ``problem.toml`` equivalent of an OpenEvolve folder, and the notes. Raises ``ProblemError``."""
    folder = Path(folder).resolve()
    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    if not folder.is_dir():
        raise ProblemError(folder, [(str(folder), "not a directory")])
    seed = _initial_program(folder)
    if seed is None:
        errors.append(("initial_program.*", "no initial program in the folder"))
    if not (folder / EVALUATOR).is_file():
        errors.append((EVALUATOR, "file not found in the problem folder"))
    config, config_name = _config(folder, errors)
    if errors:
        raise ProblemError(folder, errors)
    assert seed is not None
    if not config_name:
        notes.append("no config.yaml: OpenEvolve's defaults apply where evolve has an equivalent")
    try:
        functions = evaluator_functions(folder / EVALUATOR)
    except SyntaxError as exc:
        raise ProblemError(folder, [(EVALUATOR, f"not valid Python: {exc}")]) from None
    database = _table(config.get("database"), "database", errors)
    evaluator = _table(config.get("evaluator"), "evaluator", errors)
    llm = _table(config.get("llm"), "llm", errors)
    prompt = _table(config.get("prompt"), "prompt", errors)

    timeout = _number(evaluator.get("timeout", DEFAULT_TIMEOUT), "evaluator.timeout", errors, positive=True)
    cascade = evaluator.get("cascade_evaluation", True)
    thresholds = evaluator.get("cascade_thresholds", [0.5, 0.75, 0.9])
    if not isinstance(thresholds, list) or not all(isinstance(t, int | float) and not isinstance(t, bool)
                                                   for t in thresholds):
        errors.append(("evaluator.cascade_thresholds", "expected a list of numbers"))
        thresholds = []
    stages: list[dict[str, Any]] = []
    if cascade and "evaluate_stage1" in functions:
        names = ["evaluate_stage1"]
        if "evaluate_stage2" in functions:
            names.append("evaluate_stage2")
            if "evaluate_stage3" in functions:
                names.append("evaluate_stage3")
        for i, function in enumerate(names):
            stage: dict[str, Any] = {"name": f"stage{i + 1}", "function": function,
                                     "timeout": timeout or DEFAULT_TIMEOUT}
            if i < len(names) - 1 and i < len(thresholds):
                stage["threshold"] = float(thresholds[i])
                stage["threshold_metric"] = SCORE_METRIC
            stages.append(stage)
        notes.append("cascade: " + " -> ".join(
            f"{s['name']}" + (f" (needs {SCORE_METRIC} >= {s['threshold']:g})" if "threshold" in s else "")
            for s in stages))
    else:
        if "evaluate" not in functions:
            raise ProblemError(folder, [(EVALUATOR, "defines no evaluate(program_path) function")])
        if cascade and any(f in functions for f in STAGE_FUNCTIONS[1:]):
            notes.append("evaluate_stage2/3 defined without evaluate_stage1: only evaluate() is used")
        stages.append({"name": "evaluate", "function": "evaluate", "timeout": timeout or DEFAULT_TIMEOUT})

    evolution: dict[str, Any] = {}
    iterations = _number(config.get("max_iterations"), "max_iterations", errors, kind=int, positive=True)
    if iterations is not None:
        evolution["iterations"] = iterations
    islands = _number(database.get("num_islands"), "database.num_islands", errors, kind=int, positive=True)
    if islands is not None:
        evolution["islands"] = islands
    interval = _number(database.get("migration_interval"), "database.migration_interval", errors, kind=int,
                       positive=True)
    if interval is not None:
        evolution["migration_interval"] = interval
    exploitation = _number(database.get("exploitation_ratio"), "database.exploitation_ratio", errors)
    if exploitation is not None and 0 <= exploitation <= 1:
        evolution["exploitation"] = exploitation
    top_programs = _number(prompt.get("num_top_programs"), "prompt.num_top_programs", errors, kind=int)
    if top_programs is not None and top_programs >= 0:
        evolution["inspirations"] = top_programs
    llm_table = _llm(llm, errors, notes)
    evolution["mutator"] = "llm" if llm_table.get("models") else "tune"
    notes.append(f"mutator: {evolution['mutator']}"
                 + (" (models from config.yaml)" if llm_table.get("models") else " (no LLM models configured)"))

    limits: dict[str, Any] = {}
    memory = _number(evaluator.get("memory_limit_mb"), "evaluator.memory_limit_mb", errors, kind=int,
                     positive=True)
    if memory is not None:
        limits["memory_mb"] = memory

    description = f"OpenEvolve problem {folder.name}."
    system = prompt.get("system_message")
    if isinstance(system, str) and system.strip() and system != "system_message":
        description = system.strip()
    prompt_table: dict[str, Any] = {}
    if config.get("diff_based_evolution") is False:
        prompt_table["mode"] = "full"

    features = _features(config, database, errors, notes)
    if errors:
        raise ProblemError(folder / (config_name or "config.yaml"), errors)

    ignored = _ignored(config, _TOP_MAPPED, "")
    ignored += _ignored(database, _DATABASE_MAPPED, "database.")
    ignored += _ignored(evaluator, _EVALUATOR_MAPPED, "evaluator.")
    ignored += _ignored(llm, _LLM_MAPPED, "llm.")
    ignored += _ignored(prompt, _PROMPT_MAPPED, "prompt.")
    if ignored:
        notes.append("ignored (no evolve equivalent): " + ", ".join(ignored))
    notes.append("the evaluator runs whole inside the sandbox, sharing the candidate's process (in-process mode); "
                 "results are marked in_process")

    data: dict[str, Any] = {
        "name": _name(folder.name),
        "description": description,
        "seed": seed.name,
        "evaluator": str(SHIM),
        "score": {"metric": SCORE_METRIC, "direction": "maximize"},
        "stages": stages,
        "evolution": evolution,
        "sandbox": {"allow_in_process": True},
    }
    if features:
        data["features"] = features
    if limits:
        data["limits"] = limits
    if llm_table:
        data["llm"] = llm_table
    if prompt_table:
        data["prompt"] = prompt_table
    return data, notes


def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "openevolve_problem"


def load_openevolve_problem(folder: str | Path) -> tuple[Problem, list[str]]:
    """The ``Problem`` for an OpenEvolve-format folder and notes on the mapping (print them at start)."""
    data, notes = openevolve_problem_data(folder)
    return parse_problem(Path(folder).resolve(), data), notes


def load_any_problem(folder: str | Path) -> tuple[Problem, list[str]]:
    """``problem.toml`` if the folder has one, else the OpenEvolve format; raises ``ProblemError``."""
    folder = Path(folder)
    if is_openevolve_folder(folder):
        return load_openevolve_problem(folder)
    return load_problem(folder), []


def openevolve_problem_toml(folder: str | Path) -> str:
    """The generated definition as ``problem.toml`` text (for the run folder's snapshot)."""
    data, notes = openevolve_problem_data(folder)
    header = "# Generated by evolve from an OpenEvolve-format folder (config.yaml); notes:\n"
    header += "".join(f"#   {line}\n" for note in notes for line in note.splitlines())
    return header + dumps_toml(data)


# -- a small TOML writer (the standard library reads TOML but does not write it) -----------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps_toml(data: dict[str, Any], prefix: str = "") -> str:
    """TOML text for nested dicts of strings, numbers, booleans, lists and lists of tables."""
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{_key(key)} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        name = f"{prefix}{_key(key)}"
        if isinstance(value, dict):
            out += f"\n[{name}]\n" + dumps_toml(value, prefix=f"{name}.")
        elif _is_table_array(value):
            for item in value:
                # Nested tables of array items are written inline, which keeps the writer simple.
                body = "".join(f"{_key(k)} = {_value(v)}\n" for k, v in item.items())
                out += f"\n[[{name}]]\n{body}"
    return out
