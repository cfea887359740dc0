"""The start-up probe: endpoint reachable, key accepted, every model served; messages name URL, model, answer."""

from __future__ import annotations

import socket

import pytest

from evolve.llm.probe import EndpointError, probe
from evolve.llm.settings import LLMSettings, ModelSpec
from tests import llm_server as server_lib
from tests.llm_server import ChatServer

llm_server = server_lib.llm_server  # the fixture


def settings(url: str, *names: str, key: str = "") -> LLMSettings:
    return LLMSettings(models=tuple(ModelSpec(n) for n in names), api_base=url, api_key=key, timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_listed_models_pass_without_a_completion(llm_server: ChatServer) -> None:
    report = probe(settings(llm_server.url, "fast", "strong"))
    assert report.checks == {"fast": "listed", "strong": "listed"}
    assert report.listed == ("fast", "strong")
    assert not llm_server.requests  # no chat call was needed


def test_wrong_model_name_names_url_model_and_answer(llm_server: ChatServer) -> None:
    with pytest.raises(EndpointError) as info:
        probe(settings(llm_server.url, "fast", "gpt-typo"))
    message = str(info.value)
    assert llm_server.url in message
    assert "'gpt-typo'" in message
    assert "does not exist" in message  # the server's own answer
    assert "fast, strong" in message  # what the endpoint does serve
    assert info.value.model == "gpt-typo" and info.value.url == llm_server.url


def test_unreachable_endpoint() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError) as info:
        probe(settings(url, "fast"))
    assert url in str(info.value) and "cannot reach" in str(info.value)
    assert "refused" in str(info.value).lower()


def test_rejected_key() -> None:
    with ChatServer(models=["fast"], api_key="right") as server:
        with pytest.raises(EndpointError, match="refused the API key .*401.*Incorrect API key"):
            probe(settings(server.url, "fast", key="wrong"))
        assert probe(settings(server.url, "fast", key="right")).checks == {"fast": "listed"}


def test_server_without_model_list_is_asked_directly() -> None:
    with ChatServer(models=["local"], list_models=False) as server:
        report = probe(settings(server.url, "local"))
        assert report.listed is None and report.checks == {"local": "answered"}
        assert server.requests[-1]["max_tokens"] == 1
        with pytest.raises(EndpointError, match="'other'.*HTTP 404"):
            probe(settings(server.url, "other"))


def test_unlisted_name_the_server_accepts_is_fine() -> None:
    # llama.cpp-style: lists only its own name but answers under others too.
    with ChatServer(models=["own", "alias"], listed=["own"]) as server:
        assert probe(settings(server.url, "own", "alias")).checks == {"own": "listed", "alias": "answered"}
