"""LLM settings: precedence of the sources, key protection, model descriptions, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolve.llm.settings import (
    DEFAULT_API_BASE,
    LLMConfigError,
    ModelSpec,
    default_user_config_path,
    resolve_llm_settings,
)


@pytest.fixture
def user_config(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return write


def test_defaults_with_one_cli_model() -> None:
    s = resolve_llm_settings(None, None, {"models": ("gpt-x",)}, env={})
    assert s.api_base == DEFAULT_API_BASE
    assert s.models == (ModelSpec("gpt-x"),)
    assert s.api_key == ""
    assert s.sources["api_base"] == "default"
    assert s.max_calls is None and s.max_tokens is None and s.max_cost is None


def test_precedence_cli_over_env_over_user_over_problem(user_config) -> None:
    problem = {"api_base": "http://problem/v1", "timeout": 10, "retries": 2, "patience": 50}
    path = user_config('[llm]\napi_base = "http://user/v1"\ntimeout = 20\napi_key = "user-key"\n')
    env = {"OPENAI_BASE_URL": "http://env/v1", "OPENAI_API_KEY": "env-key"}
    cli = {"models": ("m",), "api_base": "http://cli/v1", "api_key": None, "max_llm_calls": 5}

    s = resolve_llm_settings(problem, path, cli, env)
    assert (s.api_base, s.api_key, s.timeout, s.retries, s.patience, s.max_calls) == (
        "http://cli/v1", "env-key", 20.0, 2, 50.0, 5)
    assert s.sources["api_base"] == "cli" and s.sources["api_key"] == "env" and s.sources["timeout"] == "user"
    assert s.sources["retries"] == "problem"

    s = resolve_llm_settings(problem, path, {"models": ("m",)}, env)
    assert (s.api_base, s.api_key) == ("http://env/v1", "env-key")
    s = resolve_llm_settings(problem, path, {"models": ("m",)}, {})
    assert (s.api_base, s.api_key) == ("http://user/v1", "user-key")


def test_key_is_not_sent_to_an_endpoint_named_by_the_problem(user_config) -> None:
    problem = {"api_base": "http://someone-elses-host/v1", "models": ["m"]}
    s = resolve_llm_settings(problem, None, {}, {"OPENAI_API_KEY": "secret"})
    assert s.api_base == "http://someone-elses-host/v1"
    assert s.api_key == ""
    assert any("not sent" in note for note in s.notes)
    # ... unless the user passes it explicitly for this run.
    s = resolve_llm_settings(problem, None, {"api_key": "explicit"}, {"OPENAI_API_KEY": "secret"})
    assert s.api_key == "explicit"


def test_problem_file_may_not_hold_keys() -> None:
    with pytest.raises(LLMConfigError) as info:
        resolve_llm_settings({"api_key": "x", "api_key_env": "Y", "models": ["m"]}, None, {}, {})
    assert len(info.value.errors) == 2
    assert "problem.toml [llm].api_key" in str(info.value)


def test_user_config_key_from_named_environment_variable(user_config) -> None:
    path = user_config('[llm]\napi_base = "http://vllm:8000/v1"\napi_key_env = "VLLM_KEY"\nmodels = ["q"]\n')
    s = resolve_llm_settings(None, path, {}, {"VLLM_KEY": "k1"})
    assert s.api_key == "k1"
    with pytest.raises(LLMConfigError, match="VLLM_KEY is not set"):
        resolve_llm_settings(None, path, {}, {})


def test_key_never_shown() -> None:
    s = resolve_llm_settings(None, None, {"models": ["m"], "api_key": "sk-secret"}, {})
    assert "sk-secret" not in repr(s)
    assert "sk-secret" not in str(s.to_dict())
    assert s.to_dict()["api_key_set"] is True


def test_models_with_weights_and_prices_merge_across_sources(user_config) -> None:
    problem = {"models": [{"name": "fast", "weight": 0.8, "temperature": 0.9},
                          {"name": "strong", "weight": 0.2, "max_tokens": 8000}]}
    path = user_config('[llm.prices]\nfast = { input = 0.15, output = 0.6 }\nstrong = { input = 3, output = 15 }\n')
    s = resolve_llm_settings(problem, path, {}, {})
    assert s.model_names == ("fast", "strong")
    fast, strong = s.models
    assert (fast.weight, fast.temperature, fast.price_in, fast.price_out) == (0.8, 0.9, 0.15, 0.6)
    assert (strong.max_tokens, strong.price_out) == (8000, 15.0)
    assert strong.cost(1_000_000, 100_000) == pytest.approx(3 + 1.5)

    # --model selects by name and keeps each description; an unknown name gets defaults.
    s = resolve_llm_settings(problem, path, {"models": ("strong", "other")}, {})
    assert s.model_names == ("strong", "other")
    assert s.models[0].max_tokens == 8000 and s.models[0].price_in == 3.0
    assert s.models[1] == ModelSpec("other")
    assert s.sources["models"] == "cli"


def test_model_list_of_strings_and_single_string() -> None:
    assert resolve_llm_settings({"models": "a"}, None, {}, {}).model_names == ("a",)
    assert resolve_llm_settings({"models": ["a", "b"]}, None, {}, {}).model_names == ("a", "b")


def test_every_mistake_is_reported_with_its_place(user_config) -> None:
    problem = {
        "timeout": -1,
        "retries": "three",
        "bandit_explore": 2.0,
        "colour": "blue",
        "models": [{"name": "a", "weight": 0}, {"name": "a"}, {"weight": 1}, {"name": "b", "temperature": 5}],
    }
    path = user_config("[llm]\napi_base = 'ftp://x'\n")
    with pytest.raises(LLMConfigError) as info:
        resolve_llm_settings(problem, path, {"max_cost": -1.0, "bogus": 1}, {"OPENAI_BASE_URL": "nope"})
    places = [where for where, _ in info.value.errors]
    for expected in ("problem.toml [llm].timeout", "problem.toml [llm].retries", "problem.toml [llm].bandit_explore",
                     "problem.toml [llm].colour", "problem.toml [llm].models[0].weight",
                     "problem.toml [llm].models[1].name", "problem.toml [llm].models[2].name",
                     "problem.toml [llm].models[3].temperature", f"{path} [llm].api_base",
                     "environment OPENAI_BASE_URL", "--max-cost", "command line bogus"):
        assert expected in places, (expected, places)


def test_no_model_is_an_error() -> None:
    with pytest.raises(LLMConfigError, match="no model configured"):
        resolve_llm_settings(None, None, {}, {})


def test_cost_limit_needs_a_price_for_every_model() -> None:
    with pytest.raises(LLMConfigError, match="no price for b"):
        resolve_llm_settings({"models": [{"name": "a", "price_in": 1.0}, "b"]}, None, {"max_cost": 2.0}, {})
    # An explicit zero price is a price (a local model).
    s = resolve_llm_settings({"models": [{"name": "a", "price_in": 1.0}, {"name": "b", "price_in": 0}]}, None,
                             {"max_cost": 2.0}, {})
    assert s.max_cost == 2.0


def test_backoff_max_below_backoff_is_rejected() -> None:
    with pytest.raises(LLMConfigError, match="backoff_max"):
        resolve_llm_settings({"models": ["a"], "backoff": 5, "backoff_max": 1}, None, {}, {})


def test_unreadable_user_config_is_reported_and_missing_one_ignored(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[llm\n")
    with pytest.raises(LLMConfigError, match="cannot read the user config"):
        resolve_llm_settings(None, bad, {"models": ["a"]}, {})
    assert resolve_llm_settings(None, tmp_path / "missing.toml", {"models": ["a"]}, {}).model_names == ("a",)


def test_default_user_config_path() -> None:
    assert default_user_config_path({"EVOLVE_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    assert default_user_config_path({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/evolve/config.toml")
    assert default_user_config_path({}).name == "config.toml"


# -- a resumed run's stored settings ---------------------------------------------------------------------------------


def _stored(**changes: object) -> dict:
    """What run.json keeps: the first session's settings as ``LLMSettings.to_dict()`` writes them."""
    first = resolve_llm_settings(
        {"models": [{"name": "fast", "weight": 3.0, "price_in": 0.5, "price_out": 1.5},
                    {"name": "strong", "weight": 1.0, "price_in": 2.0, "price_out": 6.0}]},
        None, {"api_base": "http://first/v1", "max_llm_calls": 4, "max_cost": 2.0}, {"OPENAI_API_KEY": "sk-s3cret"})
    data = first.to_dict()
    data.update(changes)
    assert "sk-s3cret" not in str(data)  # never the key itself
    return data


def test_stored_run_settings_sit_between_the_command_line_and_the_environment() -> None:
    env = {"OPENAI_BASE_URL": "http://env-now/v1", "OPENAI_API_KEY": "key-now"}
    s = resolve_llm_settings(None, None, {"stored": _stored()}, env)
    assert (s.api_base, s.max_calls, s.max_cost, s.api_key) == ("http://first/v1", 4, 2.0, "key-now")
    assert [(m.name, m.weight, m.price_out) for m in s.models] == [("fast", 3.0, 1.5), ("strong", 1.0, 6.0)]
    assert s.sources["api_base"] == "run" and s.sources["models"] == "run"
    assert any("OPENAI_BASE_URL" in note and "http://first/v1" in note for note in s.notes)
    # A flag given on resume wins, key by key.
    s = resolve_llm_settings(None, None, {"stored": _stored(), "max_llm_calls": 9, "models": ("strong",)}, env)
    assert (s.max_calls, s.max_cost, s.model_names) == (9, 2.0, ("strong",))
    assert s.model("strong").price_in == 2.0 and s.sources["max_calls"] == "cli"
    # The explicit keyword does the same as the mapping entry.
    assert resolve_llm_settings(None, None, {}, env, stored=_stored()).api_base == "http://first/v1"


def test_stored_zero_prices_do_not_satisfy_a_cost_limit_added_on_resume() -> None:
    unpriced = resolve_llm_settings(None, None, {"models": ("m",), "api_base": "http://x/v1"}, {}).to_dict()
    with pytest.raises(LLMConfigError, match="no price for m"):
        resolve_llm_settings(None, None, {"stored": unpriced, "max_cost": 1.0}, {})


def test_a_stored_endpoint_chosen_by_the_problem_still_gets_no_key() -> None:
    first = resolve_llm_settings({"api_base": "http://problem-host/v1", "models": ["m"]}, None, {}, {})
    s = resolve_llm_settings(None, None, {"stored": first.to_dict()}, {"OPENAI_API_KEY": "secret"})
    assert s.api_base == "http://problem-host/v1" and s.api_key == ""
    assert any("not sent" in note for note in s.notes)
