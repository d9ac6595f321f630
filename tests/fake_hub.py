"""A local stand-in for the Hugging Face Hub HTTP API, on 127.0.0.1, that records what it is sent.

It answers the calls `HfApi.create_repo`, `create_branch` and `upload_folder` make, telling the client to
send every file inline ("regular" upload mode), so the commit payload carries the files' bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.branches: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, code: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hub.requests.append(("POST", self.path))
                hub.auth_headers.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") == "Bearer hf_revoked":  # as the Hub answers a bad token
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                    hub.repos[repo_id] = data
                    return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":
                    return self._reply(200, {})
                parts = path.split("/")
                # /api/models/ORG/NAME/{preupload|commit|branch}/REV
                if len(parts) >= 7 and parts[1] == "api" and parts[2] == "models":
                    repo_id, action, rev = f"{parts[3]}/{parts[4]}", parts[5], "/".join(parts[6:])
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(200, {"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
                    if action == "commit":
                        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                        files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                                 for item in lines if item["key"] == "file"}
                        oid = hashlib.sha1(body).hexdigest()
                        hub.commits.append({"repo_id": repo_id, "revision": rev, "files": files, "oid": oid})
                        return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})
                    if action == "branch":
                        hub.branches.append((repo_id, rev))
                        return self._reply(200, {})
                return self._reply(404, {"error": f"fake hub does not know POST {path}"})

            def do_GET(self):  # noqa: N802
                hub.requests.append(("GET", self.path))
                return self._reply(404, {"error": f"fake hub does not know GET {self.path}"})

            do_HEAD = do_GET  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
