"""The ``evolve ui`` application without a browser: every page and endpoint, escaping, security headers, the token
on steering actions, and the ``evolve ui`` command's checks."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install -e '.[ui]')")
from starlette.testclient import TestClient  # noqa: E402

from evolve.cli_ui import ui  # noqa: E402
from evolve.steering import read_state  # noqa: E402
from evolve.ui.app import UIConfig, create_app  # noqa: E402

from .test_ui_data import packing_problem, write_packing_run  # noqa: E402

TOKEN = "test-token-0123456789"
KEY = "circle_packing~run-a"


@contextlib.contextmanager
def served(root: Path) -> Iterator[TestClient]:
    """The UI over ``root`` (token ``TOKEN``) behind a test client; its run store is closed after."""
    app = create_app(UIConfig(root=root, token=TOKEN))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client
    app.state.store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("uiapp")
    problem = packing_problem(base / "problem")
    root = base / "archive"
    data = write_packing_run(root / "circle_packing" / "run-a", problem, programs=40)
    with served(root) as client:
        yield client, root, data


def test_pages_answer_and_carry_the_security_headers(site) -> None:
    client, _, data = site
    best = data["best"].program_id
    for url in ("/", "/compare?run=" + KEY, f"/run/{KEY}", f"/run/{KEY}/programs?status=ok&order=best",
                f"/run/{KEY}/program/{best}", f"/run/{KEY}/program/{best[:8]}?other={data['seed'].program_id}"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert "<script>" not in response.text  # scripts come from /static only
        assert "https://" not in response.text and "http://" not in response.text.replace("http://www.w3.org", "")


def test_every_json_view(site) -> None:
    client, _, data = site
    for part in ("overview", "progress", "outcomes", "maps", "failures", "tree", "programs", "steering"):
        response = client.get(f"/api/run/{KEY}/{part}")
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store", part
    assert client.get(f"/api/run/{KEY}/overview").json()["best"]["program_id"] == data["best"].program_id
    assert client.get("/api/runs").json()["runs"][0]["key"] == KEY
    assert client.get(f"/api/compare?run={KEY}&run=nope").json()["runs"][1]["error"]
    assert set(client.get(f"/api/run/{KEY}/version").json()) == {"data", "steering"}


def test_missing_things_are_clear_errors(site) -> None:
    client, _, data = site
    page = client.get("/run/nope")
    assert page.status_code == 404 and "no run" in page.text
    assert client.get("/api/run/nope/overview").json()["error"].startswith("no run")
    assert client.get(f"/run/{KEY}/program/ffffffffffff").status_code == 404
    assert client.get(f"/api/run/{KEY}/bogus").status_code == 404
    other = client.get(f"/run/{KEY}/program/{data['seed'].program_id}?other=ffffffffffff")
    assert other.status_code == 200 and 'id="other-error"' in other.text and "no program" in other.text


def test_untrusted_code_answer_and_prompt_are_escaped(site) -> None:
    client, _, data = site
    hostile = data["hostile"]
    page = client.get(f"/run/{KEY}/program/{hostile.program_id}").text
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned = 3&lt;/script&gt;" in page  # the answer, as text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page  # the prompt, as text


def test_picture_is_sanitised_svg_with_its_own_policy(site) -> None:
    client, _, data = site
    response = client.get(f"/run/{KEY}/program/{data['best'].program_id}/picture.svg")
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.text.count("<circle") == 26
    failed = client.get(f"/run/{KEY}/program/{data['hostile'].program_id}/picture.svg")
    assert failed.status_code == 404  # no packing for a failed program


def test_steering_needs_the_token_and_records_who_and_what(site) -> None:
    client, root, data = site
    url = f"/api/run/{KEY}/steer"
    best, hostile = data["best"].program_id, data["hostile"].program_id
    assert client.post(url, json={"action": "pin", "program_id": best}).status_code == 403
    assert client.post(url, json={"action": "pin", "program_id": best},
                       headers={"X-Evolve-Token": "wrong-token-000000000"}).status_code == 403
    ok = client.post(url, json={"action": "pin", "program_id": best[:9], "who": "ann"},
                     headers={"X-Evolve-Token": TOKEN})
    assert ok.status_code == 200 and ok.json()["state"]["pinned"] == [best]
    refused = client.post(url, json={"action": "pin", "program_id": hostile}, headers={"X-Evolve-Token": TOKEN})
    assert refused.status_code == 400 and "wrong_output" in refused.json()["error"]
    for body in ({"action": "note", "text": "  "}, {"action": "nuke"}, {"action": "ban", "program_id": "zzzz"}, [1]):
        assert client.post(url, json=body, headers={"X-Evolve-Token": TOKEN}).status_code == 400
    assert client.post(url, content=b"{", headers={"X-Evolve-Token": TOKEN}).status_code == 400
    state = read_state(root / "circle_packing" / "run-a")
    assert state.pinned == (best,) and state.actions[-1].who == "ann" and state.actions[-1].source == "ui"
    assert client.get(f"/api/run/{KEY}/version").json()["steering"] == state.size


def test_reading_is_the_only_thing_other_methods_get(site) -> None:
    client, _, _ = site
    assert client.post(f"/run/{KEY}").status_code == 405
    assert client.delete(f"/api/run/{KEY}/steering").status_code == 405


def test_requests_for_other_host_names_are_refused(site) -> None:
    client, _, _ = site
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding


def test_ui_command_refuses_unsafe_or_impossible_starts(tmp_path: Path) -> None:
    runner = CliRunner()
    exposed = runner.invoke(ui, [str(tmp_path), "--host", "0.0.0.0"])
    assert exposed.exit_code != 0 and "--token" in exposed.output
    short = runner.invoke(ui, [str(tmp_path), "--token", "short"])
    assert short.exit_code != 0 and "16" in short.output
    missing = runner.invoke(ui, [str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "no such folder" in missing.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        taken = runner.invoke(ui, [str(tmp_path), "--port", str(port)])
    assert taken.exit_code != 0 and "cannot listen" in taken.output


def test_ui_command_prints_the_address_and_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evolve.ui import server

    started = []
    monkeypatch.setattr(server.UIServer, "run", lambda self: (started.append(self.config), self.socket.close()))
    real_bind = server.bind
    monkeypatch.setattr(server, "bind", lambda host, port: real_bind("127.0.0.1", 0))  # never a public interface
    result = CliRunner().invoke(ui, [str(tmp_path), "--port", "0"])
    assert result.exit_code == 0, result.output
    config = started[0]
    assert config.host == "127.0.0.1" and len(config.token) >= 16
    assert f"/?token={config.token}" in result.output and "viewing does not" in result.output
    exposed = CliRunner().invoke(ui, [str(tmp_path), "--port", "0", "--host", "0.0.0.0", "--token", TOKEN])
    assert exposed.exit_code == 0 and started[1].token == TOKEN and "anyone" in exposed.output


def test_the_listening_socket_says_tcp_so_responses_are_not_held_back() -> None:
    """asyncio turns Nagle's algorithm off only on connections of a socket whose protocol is TCP; with it on, every
    response with a body waits for the browser's delayed ACK (~40 ms each)."""
    from evolve.ui.server import bind

    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
