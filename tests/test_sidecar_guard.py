"""Cross-site writes: only the sidecar's own clients may write plots.

A web page the user visits can make the browser post to the sidecar (text/plain, form and
multipart bodies need no permission), and with DNS rebinding it can even read the answers.
The sidecar therefore answers only Host names it is reached by, refuses writes from any
page but its own (Origin), and takes only application/json bodies. The clients that must
keep working: go-metal's Go client (Content-Type application/json, Host = the address it
dialled, no Origin), gometal's own client, and the sidecar's own pages."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import sidecar_helpers
from gometal.viz import sidecar_client
from gometal.viz.server_guard import HostPolicy
from sidecar_helpers import (
    JSON,
    StubHandler,
    parse_response,
    raw_exchange,
    running_sidecar,
    sample_payload,
    stored_files,
    stub_server,
)

# The headers go-metal's PlottingService sets on every POST (Go adds Host itself).
GO_HEADERS = {"Content-Type": "application/json", "User-Agent": "go-metal-training"}

# Fixtures from sidecar_helpers (the app on a fresh data folder): pytest finds fixtures
# among a test module's names.
data_dir = sidecar_helpers.data_dir
client = sidecar_helpers.client


def raw_post(port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return raw_exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def test_the_cross_site_post_of_the_report_is_refused_and_writes_nothing(data_dir: Path) -> None:
    body = json.dumps(sample_payload("training_curves")).encode()
    with running_sidecar(data_dir) as url:
        port = int(url.rsplit(":", 1)[1])
        headers = {
            "Host": "evil.example",
            "Origin": "http://evil.example",
            "Content-Type": "text/plain",
        }
        status, response_headers, answer = parse_response(
            raw_post(port, "/api/plot", headers, body)
        )
        assert status == 400
        assert response_headers["content-type"] == "application/json"
        doc = json.loads(answer)
        assert doc["success"] is False and doc["error_code"] == "HOST_NOT_ALLOWED"
        assert "'evil.example'" in doc["message"]
    assert stored_files(data_dir) == []


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"host": "evil.example", **JSON}, 400, "HOST_NOT_ALLOWED"),
        ({"host": "evil.example:8080", **JSON}, 400, "HOST_NOT_ALLOWED"),
        ({"host": "127.0.0.1.evil.example", **JSON}, 400, "HOST_NOT_ALLOWED"),
        ({"origin": "http://evil.example", **JSON}, 403, "ORIGIN_NOT_ALLOWED"),
        ({"origin": "null", **JSON}, 403, "ORIGIN_NOT_ALLOWED"),
        ({"origin": "http://127.0.0.1:9999", **JSON}, 403, "ORIGIN_NOT_ALLOWED"),
        ({"origin": "http://localhost", **JSON}, 403, "ORIGIN_NOT_ALLOWED"),
        ({"content-type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"content-type": "multipart/form-data; boundary=x"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"content-type": "text/plain; charset=application/json"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
@pytest.mark.parametrize("path", ["/api/plot", "/api/batch-plot"])
def test_writes_from_foreign_hosts_pages_or_non_json_bodies_are_refused(
    client: TestClient, data_dir: Path, headers: dict, status: int, code: str, path: str
) -> None:
    payload = sample_payload("qq_plot")
    body = json.dumps(payload if path == "/api/plot" else {"plots": [payload]}).encode()
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["success"] is False and answer["error_code"] == code
    assert stored_files(data_dir) == []


def test_reads_through_a_rebound_name_are_refused(client: TestClient) -> None:
    assert client.post("/api/plot", json=sample_payload("qq_plot")).status_code == 200
    for path in ("/api/plots", "/", "/health", "/openapi.json"):
        response = client.get(path, headers={"host": "attacker.example"})
        assert response.status_code == 400 and response.json()["error_code"] == "HOST_NOT_ALLOWED"


@pytest.mark.parametrize(
    "headers",
    [
        GO_HEADERS,
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "Application/JSON"},
        {"host": "localhost:8080", **JSON},
        {"host": "[::1]:8080", **JSON},
        {"host": "LOCALHOST.", **JSON},
        {"origin": "http://127.0.0.1", **JSON},  # the sidecar's own page
    ],
)
def test_legitimate_writers_are_accepted(client: TestClient, headers: dict) -> None:
    body = json.dumps(sample_payload("qq_plot")).encode()
    response = client.post("/api/plot", content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_the_go_client_and_gometals_client_write_to_a_real_sidecar(data_dir: Path) -> None:
    body = json.dumps(sample_payload("training_curves")).encode()
    with running_sidecar(data_dir) as url:
        port = int(url.rsplit(":", 1)[1])
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):  # as Go's net/http sets it
            raw = raw_post(port, "/api/plot", {"Host": host, **GO_HEADERS}, body)
            status, _, answer = parse_response(raw)
            assert status == 200 and json.loads(answer)["success"] is True
        assert sidecar_client.SidecarClient(url).send(sample_payload("qq_plot")) is not None
        same_origin = {"Host": f"127.0.0.1:{port}", "Origin": url, **GO_HEADERS}
        assert parse_response(raw_post(port, "/api/plot", same_origin, body))[0] == 200
    assert len(stored_files(data_dir / "plots")) == 4


def test_allowed_host_adds_a_name_and_star_accepts_any(data_dir: Path) -> None:
    body = json.dumps(sample_payload("qq_plot")).encode()
    with running_sidecar(data_dir, "--allowed-host", "plots.internal") as url:
        port = int(url.rsplit(":", 1)[1])
        for host, status in (("plots.internal:80", 200), ("other.internal", 400)):
            raw = raw_post(port, "/api/plot", {"Host": host, **GO_HEADERS}, body)
            assert parse_response(raw)[0] == status
    policy = HostPolicy.for_bind("127.0.0.1", ["*"])
    assert policy.allows("anything.example") and policy.describe() == "any host"


def test_host_policy_of_each_bind_address() -> None:
    loopback = HostPolicy.for_bind("127.0.0.1")
    assert [loopback.allows(h) for h in ("127.0.0.1:1", "localhost", "[::1]:80")] == [True] * 3
    assert not loopback.allows("192.168.1.20:8080")
    assert not loopback.allows("evil.example") and not loopback.allows("local host")

    wildcard = HostPolicy.for_bind("0.0.0.0")
    assert wildcard.allows(socket.gethostname()) and wildcard.allows(f"{socket.getfqdn()}:80")
    assert wildcard.allows("192.168.1.20:8080") and wildcard.allows("[fe80::1]:8080")
    assert not wildcard.allows("evil.example:8080")
    assert HostPolicy.for_bind("::").allows("10.1.2.3")

    named = HostPolicy.for_bind("10.0.0.5", ["sidecar"])
    assert named.allows("10.0.0.5:8080") and named.allows("SIDECAR:80")
    assert not named.allows("10.0.0.6")


@pytest.mark.parametrize("bad", ["", "a b", "host:80", "a/b", "user@host", 5])
def test_bad_allowed_host_names_are_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match=r"allowed hosts .* got " + repr(bad).replace("/", ".")):
        HostPolicy(["localhost", bad])  # type: ignore[list-item]


def test_cli_refuses_a_bad_allowed_host() -> None:
    from gometal.apps.cli import build_parser

    args = build_parser().parse_args(["sidecar", "--allowed-host", "a", "--allowed-host", "b"])
    assert args.allowed_hosts == ["a", "b"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sidecar", "--allowed-host", "a b"])


# ---------------------------------------------------------------- a real browser

ATTACK_PAGE = """<!DOCTYPE html><html><body><script>
window.attack = async (target, body) => {
  const tries = {
    text_plain: {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body},
    untyped_blob: {method: 'POST', mode: 'no-cors', body: new Blob([body])},
    form: {method: 'POST', mode: 'no-cors',
           headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body},
    json_cors: {method: 'POST', headers: {'Content-Type': 'application/json'}, body},
  };
  const outcome = {};
  for (const [name, init] of Object.entries(tries)) {
    try { await fetch(target, init); outcome[name] = 'sent'; }
    catch (e) { outcome[name] = 'blocked'; }
  }
  return outcome;
};
</script></body></html>"""


class _RecordingHandler(StubHandler):
    """Serves the attack page, and records the writes a browser sends to it."""

    writes: list[dict[str, str | None]] = []  # noqa: RUF012 - one list per subclass

    def do_GET(self) -> None:
        self.send_whole(200, ATTACK_PAGE.encode(), "text/html")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.writes.append(
            {"origin": self.headers.get("origin"), "type": self.headers.get("content-type")}
        )
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def attack_site() -> Iterator[tuple[str, type[_RecordingHandler]]]:
    handler = type("Handler", (_RecordingHandler,), {"writes": []})
    with stub_server(handler) as port:
        yield f"http://localhost:{port}", handler


def test_a_page_on_another_site_cannot_write_but_the_sidecars_own_page_can(
    browser, attack_site, data_dir: Path
) -> None:
    site, recorder = attack_site
    body = json.dumps(json.dumps(sample_payload("qq_plot")))
    browser.load(site + "/attack.html")
    # The page aimed at another origin that records what arrives: the browser sends these
    # writes without asking, all but the JSON one (refused by the CORS preflight).
    other_origin = site.replace("localhost", "127.0.0.1") + "/record"
    sent = browser.evaluate(f"attack({json.dumps(other_origin)}, {body})")
    assert sent == {
        "text_plain": "sent",
        "untyped_blob": "sent",
        "form": "sent",
        "json_cors": "blocked",
    }
    assert sorted(str(w["type"]) for w in recorder.writes) == [
        "None", "application/x-www-form-urlencoded", "text/plain"
    ]  # fmt: skip
    assert all(w["origin"] == site for w in recorder.writes)

    with running_sidecar(data_dir) as url:
        outcome = browser.evaluate(f"attack({json.dumps(url + '/api/plot')}, {body})")
        # A JSON write needs the sidecar's permission first (CORS), which it never gives.
        assert outcome["json_cors"] == "blocked"
        assert sidecar_client.health(url)["plots"] == 0
        assert stored_files(data_dir) == []

        browser.load(url + "/")
        own = browser.evaluate(
            f"fetch('/api/plot', {{method: 'POST', headers: {{'Content-Type': "
            f"'application/json'}}, body: {body}}}).then(r => r.status)"
        )
        assert own == 200
        assert sidecar_client.health(url)["plots"] == 1
