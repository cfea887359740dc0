"""LLM settings: endpoint, key, model ensemble, retries, budgets, resolved from every place a user may set them.

Precedence, per key (highest first): CLI flags > the settings a resumed run stored in its ``run.json`` > environment
(``OPENAI_BASE_URL``, ``OPENAI_API_KEY``) > the user's config file (``[llm]`` of ``~/.config/evolve/config.toml``) >
the problem's ``[llm]`` table > defaults. A resumed run thus continues with the endpoint, models, weights and budgets
it started with, whatever the environment says now, unless a flag given on resume says otherwise. Stored settings
never hold a key: the key comes from the same places as on the first session.

One exception protects keys: an API key is sent only to an endpoint the user chose. When the URL comes from the
problem file (someone else's folder may name any host), only ``--api-key`` supplies a key; the environment's and the
user config's keys are kept for the URLs named by the user (CLI, environment, user config) or the default OpenAI URL.
Problem files may not hold keys at all.

``--model NAME`` (repeatable) selects models by name; a name also described in a config file (weight, temperature,
prices) keeps that description. Every mistake is collected and reported together, each with where it was found.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

DEFAULT_API_BASE = "https://api.openai.com/v1"
KEY_PLACEHOLDER = "no-key"  # the OpenAI client refuses an empty key; local servers ignore whatever is sent


class Source(StrEnum):
    """Where a setting came from, lowest precedence first."""

    DEFAULT = "default"
    PROBLEM = "problem"
    USER = "user"
    ENV = "env"
    RUN = "run"  # stored in the run.json of the run being resumed
    CLI = "cli"


class LLMConfigError(ValueError):
    """LLM settings are unusable. ``errors`` lists every ``(location, reason)`` found."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = [f"{len(errors)} problem(s) in the LLM settings:"]
        lines += [f"  - {where}: {why}" for where, why in errors]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ModelSpec:
    """One model of the ensemble."""

    name: str
    weight: float = 1.0  # relative share of calls (and the bandit's exploration prior)
    temperature: float = 0.7
    max_tokens: int = 4096  # completion tokens per answer
    price_in: float = 0.0  # USD per 1M prompt tokens
    price_out: float = 0.0  # USD per 1M completion tokens
    extra_body: dict[str, Any] = field(default_factory=dict)  # vendor parameters sent as-is (e.g. top_k)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "weight": self.weight, "temperature": self.temperature,
            "max_tokens": self.max_tokens, "price_in": self.price_in, "price_out": self.price_out,
            "extra_body": dict(self.extra_body),
        }


@dataclass(frozen=True)
class LLMSettings:
    """Everything the LLM mutator needs besides the problem. ``api_key`` is never shown or stored."""

    models: tuple[ModelSpec, ...]
    api_base: str = DEFAULT_API_BASE
    api_key: str = field(default="", repr=False)
    timeout: float = 120.0  # seconds per HTTP attempt
    retries: int = 6  # retries of one call (429, 5xx, connection errors, timeouts) before giving it up
    backoff: float = 1.0  # first retry wait in seconds; doubles per retry, with jitter
    backoff_max: float = 60.0  # longest wait between retries, Retry-After included
    patience: float = 300.0  # seconds the endpoint may keep failing before the run stops
    max_concurrency: int = 32  # most calls in flight; the client adapts below it (evolve.llm.limiter)
    start_concurrency: int = 8  # calls in flight at first
    send_seed: bool = True  # send the per-iteration seed (servers that reject it: set false)
    bandit: bool = False  # adaptive model choice (Thompson sampling on "child improved on its parent")
    bandit_cost_weight: float = 0.0  # 0: ignore cost; 1: a model costing the most loses up to a full success rate
    bandit_explore: float = 0.1  # share of calls drawn by the static weights even when the bandit is on
    fallback_full_rewrite: bool = True  # ask for a full rewrite when a diff answer cannot be applied
    max_calls: int | None = None  # budgets: the run stops at the first one reached
    max_tokens: int | None = None
    max_cost: float | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # setting -> where it came from
    notes: tuple[str, ...] = ()  # things the user should know (e.g. a key withheld from a problem's URL)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """For run.json: every setting except the key (whose presence only is recorded)."""
        data: dict[str, Any] = {
            "api_base": self.api_base,
            "api_key_set": bool(self.api_key),
            "models": [m.to_dict() for m in self.models],
        }
        for name in ("timeout", "retries", "backoff", "backoff_max", "patience", "max_concurrency",
                     "start_concurrency", "send_seed", "bandit", "bandit_cost_weight", "bandit_explore", "fallback_full_rewrite", "max_calls",
                     "max_tokens", "max_cost"):
            data[name] = getattr(self, name)
        data["sources"] = dict(self.sources)
        return data


# -- parsing ----------------------------------------------------------------------------------------------------------

_SCALARS: dict[str, tuple[type | tuple[type, ...], str]] = {
    # key: (types, check) where check is one of the names in _CHECKS
    "api_base": (str, "url"),
    "timeout": (float, "positive"),
    "retries": (int, "non_negative"),
    "backoff": (float, "non_negative"),
    "backoff_max": (float, "non_negative"),
    "patience": (float, "positive"),
    "max_concurrency": (int, "positive"),
    "start_concurrency": (int, "positive"),
    "send_seed": (bool, ""),
    "bandit": (bool, ""),
    "bandit_cost_weight": (float, "non_negative"),
    "bandit_explore": (float, "fraction"),
    "fallback_full_rewrite": (bool, ""),
    "max_calls": (int, "positive"),
    "max_tokens": (int, "positive"),
    "max_cost": (float, "positive"),
}
_CHECKS = {
    "": lambda v: None,
    "positive": lambda v: None if v > 0 else "must be > 0",
    "non_negative": lambda v: None if v >= 0 else "must be >= 0",
    "fraction": lambda v: None if 0 <= v <= 1 else "must be between 0 and 1",
    "url": lambda v: None if v.startswith(("http://", "https://")) else "must start with http:// or https://",
}
_MODEL_KEYS = {"name", "weight", "temperature", "max_tokens", "price_in", "price_out", "extra_body"}
_CLI_KEYS = {"models": "model", "model": "model", "api_base": "api_base", "api_key": "api_key",
             "max_llm_calls": "max_calls", "max_tokens": "max_tokens", "max_cost": "max_cost"}
STORED_KEY = "stored"  # in the ``cli`` mapping: a resumed run's stored settings (``LLMSettings.to_dict()``)
_CLI_FLAGS = {"model": "--model", "api_base": "--api-base", "api_key": "--api-key", "max_calls": "--max-llm-calls",
              "max_tokens": "--max-tokens", "max_cost": "--max-cost"}


@dataclass
class _Layer:
    """What one source sets (only the keys it sets)."""

    source: Source
    label: str  # human-readable origin, e.g. "problem.toml [llm]"
    values: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] | None = None  # partial model entries (unset fields absent)
    model_names: list[str] | None = None  # CLI selection by name
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # stored layer: where each value first came from


def _typed(value: Any, kinds: type | tuple[type, ...]) -> tuple[Any, str | None]:
    """Coerce ints to floats where floats are wanted; reject booleans posing as numbers."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in kinds:
        return None, "expected a number, got a boolean"
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds):
        names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
        wanted = " or ".join(names.get(k, k.__name__) for k in kinds)
        return None, f"expected {wanted}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return None, "must be finite"
    return value, None


def _parse_table(table: Mapping[str, Any], source: Source, label: str, env: Mapping[str, str],
                 errors: list[tuple[str, str]]) -> _Layer:
    layer = _Layer(source=source, label=label)
    allowed = set(_SCALARS) | {"models", "prices"}
    if source is Source.USER:
        allowed |= {"api_key", "api_key_env"}
    for key, value in table.items():
        where = f"{label}.{key}"
        if key in ("api_key", "api_key_env") and source is Source.PROBLEM:
            errors.append((where, "API keys do not belong in a problem file; use OPENAI_API_KEY, --api-key or "
                                  "the user config file"))
            continue
        if key not in allowed:
            errors.append((where, f"unknown key (allowed: {', '.join(sorted(allowed))})"))
            continue
        if key == "models":
            layer.models = _parse_models(value, where, errors)
        elif key == "prices":
            layer.prices = _parse_prices(value, where, errors)
        elif key == "api_key":
            if isinstance(value, str):
                layer.values["api_key"] = value
            else:
                errors.append((where, "expected a string"))
        elif key == "api_key_env":
            if not isinstance(value, str) or not value:
                errors.append((where, "expected the name of an environment variable"))
            elif value not in env:
                errors.append((where, f"environment variable {value} is not set"))
            else:
                layer.values["api_key"] = env[value]
        else:
            kinds, check = _SCALARS[key]
            typed, problem = _typed(value, kinds)
            problem = problem or _CHECKS[check](typed)
            if problem:
                errors.append((where, problem))
            else:
                layer.values[key] = typed
    return layer


def _parse_models(value: Any, where: str, errors: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        errors.append((where, "expected a non-empty list of model names or tables ([[llm.models]])"))
        return []
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        loc = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            errors.append((loc, "expected a model name or a table"))
            continue
        entry: dict[str, Any] = {}
        for key, raw in item.items():
            if key not in _MODEL_KEYS:
                errors.append((f"{loc}.{key}", f"unknown key (allowed: {', '.join(sorted(_MODEL_KEYS))})"))
                continue
            kinds: type | tuple[type, ...] = {"name": str, "max_tokens": int, "extra_body": dict}.get(key, float)
            typed, problem = _typed(raw, kinds)
            if problem is None:
                problem = {
                    "name": lambda v: None if v.strip() else "must not be empty",
                    "weight": _CHECKS["positive"],
                    "temperature": lambda v: None if 0 <= v <= 2 else "must be between 0 and 2",
                    "max_tokens": _CHECKS["positive"],
                    "price_in": _CHECKS["non_negative"],
                    "price_out": _CHECKS["non_negative"],
                    "extra_body": _CHECKS[""],
                }[key](typed)
            if problem:
                errors.append((f"{loc}.{key}", problem))
            else:
                entry[key] = typed
        if "name" not in entry:
            if "name" not in item:
                errors.append((f"{loc}.name", "required key is missing"))
            continue
        if entry["name"] in seen:
            errors.append((f"{loc}.name", f"duplicate model {entry['name']!r}"))
            continue
        seen.add(entry["name"])
        entries.append(entry)
    return entries


def _parse_prices(value: Any, where: str, errors: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        errors.append((where, "expected a table of model = { input = USD/1M, output = USD/1M }"))
        return {}
    prices: dict[str, dict[str, float]] = {}
    for model, item in value.items():
        loc = f"{where}.{model}"
        if not isinstance(item, dict) or set(item) - {"input", "output"}:
            errors.append((loc, "expected { input = <USD per 1M prompt tokens>, output = <USD per 1M completion "
                                "tokens> }"))
            continue
        entry: dict[str, float] = {}
        for key, raw in item.items():
            typed, problem = _typed(raw, float)
            problem = problem or _CHECKS["non_negative"](typed)
            if problem:
                errors.append((f"{loc}.{key}", problem))
            else:
                entry["price_in" if key == "input" else "price_out"] = typed
        prices[model] = entry
    return prices


def _env_layer(env: Mapping[str, str], errors: list[tuple[str, str]]) -> _Layer:
    layer = _Layer(source=Source.ENV, label="environment")
    base = env.get("OPENAI_BASE_URL", "").strip()
    if base:
        if problem := _CHECKS["url"](base):
            errors.append(("environment OPENAI_BASE_URL", problem))
        else:
            layer.values["api_base"] = base
    key = env.get("OPENAI_API_KEY", "").strip()
    if key:
        layer.values["api_key"] = key
    return layer


def _cli_layer(cli: Mapping[str, Any], errors: list[tuple[str, str]]) -> _Layer:
    layer = _Layer(source=Source.CLI, label="command line")
    for raw_key, value in cli.items():
        key = _CLI_KEYS.get(raw_key)
        if key is None:
            errors.append((f"command line {raw_key}", f"unknown LLM option (known: {', '.join(sorted(_CLI_KEYS))})"))
            continue
        if value is None or (key == "model" and not value):
            continue
        flag = _CLI_FLAGS[key]
        if key == "model":
            names = [value] if isinstance(value, str) else list(value)
            bad = [n for n in names if not isinstance(n, str) or not n.strip()]
            if bad:
                errors.append((flag, f"empty model name in {names!r}"))
                continue
            layer.model_names = list(dict.fromkeys(n.strip() for n in names))
        elif key == "api_key":
            layer.values["api_key"] = str(value)
        else:
            kinds, check = _SCALARS[key]
            typed, problem = _typed(value, kinds)
            problem = problem or _CHECKS[check](typed)
            if problem:
                errors.append((flag, problem))
            else:
                layer.values[key] = typed
    return layer


def _stored_layer(stored: Mapping[str, Any], env: Mapping[str, str], errors: list[tuple[str, str]]) -> _Layer:
    """The settings a resumed run stored (``LLMSettings.to_dict()``), parsed like any other source.

    A stored price of 0 counts as given only if the run had a cost limit (then every price was given explicitly);
    otherwise a cost limit added on resume must still find a real price for every model."""
    table: dict[str, Any] = {k: v for k, v in stored.items() if k in _SCALARS and v is not None}
    priced = stored.get("max_cost") is not None
    models = []
    for entry in stored.get("models") or []:
        if isinstance(entry, dict):
            models.append({k: v for k, v in entry.items()
                           if k in _MODEL_KEYS and (k not in ("price_in", "price_out") or priced or v)})
    if models:
        table["models"] = models
    layer = _parse_table(table, Source.RUN, "run.json llm", env, errors)
    sources = stored.get("sources")
    layer.origins = {str(k): str(v) for k, v in sources.items()} if isinstance(sources, dict) else {}
    return layer


def default_user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$EVOLVE_CONFIG``, else ``$XDG_CONFIG_HOME/evolve/config.toml``, else ``~/.config/evolve/config.toml``."""
    env = os.environ if env is None else env
    if env.get("EVOLVE_CONFIG"):
        return Path(env["EVOLVE_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "evolve" / "config.toml"


def _read_user_config(path: Path, errors: list[tuple[str, str]]) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        errors.append((str(path), f"cannot read the user config: {exc}"))
        return None
    table = data.get("llm", {})
    if not isinstance(table, dict):
        errors.append((f"{path} [llm]", "expected a table"))
        return None
    return table


def resolve_llm_settings(
    problem_section: Mapping[str, Any] | None,
    user_config_path: Path | None,
    cli: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    stored: Mapping[str, Any] | None = None,
) -> LLMSettings:
    """Merge the sources (see the module docstring) into validated ``LLMSettings``; raise ``LLMConfigError``.

    ``problem_section`` is the problem's raw ``[llm]`` table, ``user_config_path`` a TOML file with an ``[llm]`` table
    (a missing file is no config), ``cli`` the ``evolve run`` options (``models``, ``api_base``, ``api_key``,
    ``max_llm_calls``, ``max_tokens``, ``max_cost``; ``None`` values are not given), ``env`` the environment,
    ``stored`` the settings a resumed run stored (they may also come as ``cli[STORED_KEY]``).
    """
    env = os.environ if env is None else env
    cli = dict(cli or {})
    stored = cli.pop(STORED_KEY, None) if stored is None else stored
    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    layers: list[_Layer] = []
    if problem_section:
        layers.append(_parse_table(problem_section, Source.PROBLEM, "problem.toml [llm]", env, errors))
    if user_config_path is not None:
        table = _read_user_config(user_config_path, errors)
        if table:
            layers.append(_parse_table(table, Source.USER, f"{user_config_path} [llm]", env, errors))
    layers.append(_env_layer(env, errors))
    run_layer = _stored_layer(stored, env, errors) if isinstance(stored, Mapping) else None
    if run_layer is not None:
        layers.append(run_layer)
    layers.append(_cli_layer(cli, errors))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:  # lowest precedence first: later layers overwrite
        for key, value in layer.values.items():
            values[key] = value
            sources[key] = layer.source.value
    origin = sources.get("api_base")
    if run_layer is not None and origin == Source.RUN.value:
        origin = run_layer.origins.get("api_base", Source.USER.value)  # who chose the stored endpoint
        env_base = env.get("OPENAI_BASE_URL", "").strip()
        if env_base and env_base != values.get("api_base"):
            notes.append(f"OPENAI_BASE_URL is {env_base}, but this run was started with {values.get('api_base')}; "
                         "the run's endpoint is used (pass --api-base to change it)")
    _guard_key(values, sources, notes, origin)

    models = _resolve_models(layers, errors, sources)
    if errors:
        raise LLMConfigError(errors)
    if values.get("backoff_max", 60.0) < values.get("backoff", 1.0):
        errors.append(("backoff_max", f"must be >= backoff ({values.get('backoff', 1.0)})"))
    if values.get("max_cost") is not None:
        free = [m.name for m in models if m.price_in == 0 and m.price_out == 0 and not _priced(m.name, layers)]
        if free:
            errors.append((_CLI_FLAGS["max_cost"] if sources.get("max_cost") == "cli" else "max_cost",
                           f"a cost limit needs a price for every model; no price for {', '.join(free)} (set "
                           "price_in/price_out in [[llm.models]] or [llm.prices]; 0 is a valid price)"))
    if errors:
        raise LLMConfigError(errors)
    sources.setdefault("api_base", Source.DEFAULT.value)
    return LLMSettings(models=tuple(models), sources=sources, notes=tuple(notes), **values)


def _guard_key(values: dict[str, Any], sources: dict[str, str], notes: list[str], origin: str | None) -> None:
    """Withhold a key from a URL chosen by a problem file (``origin``: who chose the URL) unless the key itself came
    from the command line."""
    if origin != Source.PROBLEM.value or "api_key" not in values:
        return
    if sources.get("api_key") == Source.CLI.value:
        return
    notes.append(f"the endpoint {values['api_base']} was chosen by problem.toml, so the API key from the "
                 f"{sources['api_key']} settings is not sent to it (pass --api-key, or set the URL yourself)")
    del values["api_key"]
    del sources["api_key"]


def _priced(name: str, layers: Sequence[_Layer]) -> bool:
    """Whether some source gave this model a price explicitly (0 included)."""
    for layer in layers:
        if name in layer.prices:
            return True
        for entry in layer.models or []:
            if entry.get("name") == name and ("price_in" in entry or "price_out" in entry):
                return True
    return False


def _resolve_models(layers: Sequence[_Layer], errors: list[tuple[str, str]], sources: dict[str, str]) -> list[ModelSpec]:
    # Descriptions of a model merge across config sources (higher wins per field), so a user config can hold the
    # price table while the problem names the models; the list of models itself is the highest source's.
    described: dict[str, dict[str, Any]] = {}
    chosen: list[str] | None = None
    prices: dict[str, dict[str, float]] = {}
    for layer in layers:
        for name, price in layer.prices.items():
            prices.setdefault(name, {}).update(price)
        if layer.models is not None:
            chosen = [entry["name"] for entry in layer.models]
            sources["models"] = layer.source.value
            for entry in layer.models:
                described.setdefault(entry["name"], {}).update(entry)
        if layer.model_names is not None:
            chosen = layer.model_names
            sources["models"] = layer.source.value
    if not chosen:
        if not errors:
            errors.append(("models", "no model configured: pass --model NAME, or list models in the [llm] table of "
                                     "problem.toml or of the user config file"))
        return []
    specs = []
    for name in chosen:
        entry = {"name": name, **prices.get(name, {}), **described.get(name, {})}
        specs.append(ModelSpec(**entry))
    return specs

