"""`yuqing dashboards push` against a small fake Grafana on 127.0.0.1 that records every request.

The fake implements the handful of HTTP API endpoints push uses, with Grafana's semantics for them:
folders by uid, dashboards saved by uid with a version that grows on each save.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from dashboards import build
from dashboards.cli import dashboards_group
from dashboards.push import folder_uid, push
from stream.core.errors import ConfigError, ServiceUnavailable

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)  # uid -> title
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> stored record
    url: str = ""

    def calls(self, method: str, path: str) -> list[dict[str, Any] | None]:
        return [body for m, p, body in self.requests if m == method and p == path]


def _handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"message": "invalid API key"})
                return False
            return True

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path.split("?")[0], None))
            if not self._authorised():
                return
            if self.path.startswith("/api/folders/"):
                uid = self.path.rsplit("/", 1)[1]
                if uid in state.folders:
                    self._reply(200, {"uid": uid, "title": state.folders[uid]})
                else:
                    self._reply(404, {"message": "folder not found"})
            elif self.path.split("?")[0] == "/api/folders":
                self._reply(200, [{"id": i, "uid": u, "title": t} for i, (u, t) in enumerate(state.folders.items(), 1)])
            else:
                self._reply(404, {"message": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(("POST", self.path, body))
            if not self._authorised():
                return
            if self.path == "/api/folders":
                uid = body.get("uid") or f"f{len(state.folders)}"
                if uid in state.folders:
                    self._reply(409, {"message": "a folder with the same uid already exists"})
                    return
                state.folders[uid] = body["title"]
                self._reply(200, {"uid": uid, "title": body["title"]})
            elif self.path == "/api/dashboards/db":
                dash = body["dashboard"]
                uid = dash["uid"]
                if uid in state.dashboards and not body.get("overwrite"):
                    self._reply(412, {"message": "version-mismatch", "status": "version-mismatch"})
                    return
                if body.get("folderUid") not in state.folders:
                    self._reply(400, {"message": "folder not found"})
                    return
                version = state.dashboards.get(uid, {}).get("version", 0) + 1
                state.dashboards[uid] = {"dashboard": dash, "folderUid": body["folderUid"], "version": version}
                self._reply(200, {"id": 1, "uid": uid, "url": f"/d/{uid}/x", "status": "success", "version": version})
            else:
                self._reply(404, {"message": "not found"})

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def committed() -> dict[str, dict[str, Any]]:
    return build.load_dashboards(build.GENERATED_DIR)


def test_push_creates_folder_then_dashboards_and_is_idempotent(grafana: FakeGrafana) -> None:
    boards = committed()
    first = push(grafana.url, TOKEN, boards, folder="Public Opinion")
    assert [p.uid for p in first] == [d["uid"] for d in boards.values()]
    assert len(first) == len(build.DASHBOARDS) >= 4
    assert [p.version for p in first] == [1] * len(boards)
    assert grafana.folders == {folder_uid("Public Opinion"): "Public Opinion"}
    assert len(grafana.calls("POST", "/api/folders")) == 1

    saves = grafana.calls("POST", "/api/dashboards/db")
    assert len(saves) == len(boards)
    for body, original in zip(saves, boards.values(), strict=True):
        assert body is not None
        assert body["overwrite"] is True
        assert body["folderUid"] == "public-opinion"
        assert body["dashboard"]["id"] is None
        sent = dict(body["dashboard"])
        sent.pop("id")
        assert sent == {k: v for k, v in original.items() if k not in ("id", "version")}

    # the second push finds the folder and overwrites the same uids: nothing new is created
    second = push(grafana.url, TOKEN, boards, folder="Public Opinion")
    assert len(grafana.calls("POST", "/api/folders")) == 1
    assert len(grafana.dashboards) == len(boards)
    assert [p.version for p in second] == [2] * len(boards)
    resent = grafana.calls("POST", "/api/dashboards/db")[len(boards):]
    assert [b["dashboard"] for b in resent if b] == [b["dashboard"] for b in saves if b]


def test_push_uses_an_existing_folder_with_the_title(grafana: FakeGrafana) -> None:
    grafana.folders["abc123"] = "yuqing"
    push(grafana.url, TOKEN, committed())
    assert grafana.calls("POST", "/api/folders") == []
    assert {d["folderUid"] for d in grafana.dashboards.values()} == {"abc123"}


def test_bad_token_and_unreachable_grafana_are_typed_errors(grafana: FakeGrafana) -> None:
    with pytest.raises(ConfigError, match="rejected the token"):
        push(grafana.url, "wrong", committed())
    with pytest.raises(ServiceUnavailable):
        push("http://127.0.0.1:9", TOKEN, committed(), timeout_s=2)
    with pytest.raises(ConfigError, match="http"):
        push("grafana.local:3000", TOKEN, committed())


def test_cli_push(grafana: FakeGrafana) -> None:
    result = CliRunner().invoke(dashboards_group, ["push", "--url", grafana.url, "--folder", "yuqing"],
                                env={"GRAFANA_TOKEN": TOKEN})
    assert result.exit_code == 0, result.output
    assert "yuqing-overview  version 1  /d/yuqing-overview/x" in result.output
    assert set(grafana.dashboards) == set(build.DASHBOARDS) == {
        "yuqing-overview", "yuqing-drilldown", "yuqing-story", "yuqing-pipeline"
    }
