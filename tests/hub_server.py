"""A stand-in for the Hugging Face Hub's file protocol on 127.0.0.1, for tests of the online code paths.

It speaks the few endpoints that `huggingface_hub` (snapshot_download, hf_hub_download, HfFileSystem) and `datasets`
(load_dataset) call, over repositories held in memory; point the clients at it with HF_ENDPOINT=`server.url`:

    GET  /api/{models,datasets}/REPO[/revision/REV]          repository info: sha, siblings
    GET  /api/{models,datasets}/REPO/tree/REV[/PATH]         the file tree (?recursive=true)
    POST /api/{models,datasets}/REPO/paths-info/REV          info on the given paths (form field `paths`)
    HEAD|GET /REPO/resolve/REV/FILE, /datasets/REPO/resolve/REV/FILE     a file (Range requests too)

Every request is recorded in `server.requests` as (method, path), so a test can also show that nothing was asked for.
Unknown repositories and files answer 404 with the Hub's X-Error-Code header, as the Hub does.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

KINDS = {"models": "model", "datasets": "dataset"}


class HubRepo:
    """One repository: files by path, and a fixed commit sha derived from their contents."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(sorted(files.items()))
        digest = hashlib.sha1()
        for path, data in self.files.items():
            digest.update(path.encode() + b"\0" + data)
        self.sha = digest.hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
        return {"type": "file", "oid": oid, "size": len(data), "path": path}

    def folders(self) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}


class HubServer:
    """The server, on a free port of 127.0.0.1, in a daemon thread; `add` repositories before or while it runs."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, kind: str, repo_id: str, files: dict[str, bytes | str | Path]) -> HubRepo:
        """Serve `files` (path in repo -> bytes, text, or a local file) as repository `repo_id` ("model"/"dataset")."""
        data = {}
        for path, value in files.items():
            if isinstance(value, Path):
                value = value.read_bytes()
            data[path] = value.encode() if isinstance(value, str) else value
        repo = HubRepo(data)
        self.repos[(kind, repo_id)] = repo
        return repo

    def add_folder(self, kind: str, repo_id: str, folder: Path) -> HubRepo:
        return self.add(kind, repo_id, {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()})

    def asked_for(self, repo_id: str) -> list[tuple[str, str]]:
        return [r for r in self.requests if repo_id in unquote(r[1])]

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_API = re.compile(r"^/api/(models|datasets)/(.+?)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^(?:/(datasets))?/(.+?)/resolve/([^/]+)/(.+)$")


def _handler(server: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # requests are recorded in server.requests, not printed
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, value, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def _missing(self, what: str, head: bool = False) -> None:
            code = "RepoNotFound" if what == "repo" else "EntryNotFound"
            body = json.dumps({"error": f"{what} not found"}).encode()
            self._send(404, body, {"X-Error-Code": code, "X-Error-Message": f"{what} not found"}, head)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            with server._lock:
                server.requests.append((method, path))
            if m := _API.match(path):
                self._api(method, KINDS[m.group(1)], m.group(2), m.group(3), m.group(5) or "", url.query)
            elif m := _RESOLVE.match(path):
                kind = "dataset" if m.group(1) else "model"
                self._file(method, kind, m.group(2), m.group(3), m.group(4))
            else:
                self._missing("repo", head=method == "HEAD")

        def _api(self, method: str, kind: str, repo_id: str, action: str | None, sub: str, query: str) -> None:
            repo = server.repos.get((kind, repo_id))
            if repo is None:
                return self._missing("repo")
            if action in (None, "revision"):
                siblings = [{"rfilename": p, "size": len(d)} for p, d in repo.files.items()]
                info = {"id": repo_id, "_id": repo.sha[:24], "sha": repo.sha, "private": False, "disabled": False}
                info |= {"gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings}
                info |= {"lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}
                return self._json(info)
            if action == "tree":
                recursive = parse_qs(query).get("recursive", ["false"])[0].lower() == "true"
                prefix = sub.strip("/") + "/" if sub.strip("/") else ""
                entries = []
                for folder in sorted(repo.folders()):
                    inside = folder.startswith(prefix) and folder != prefix.rstrip("/")
                    if inside and (recursive or "/" not in folder[len(prefix) :]):
                        entries.append({"type": "directory", "oid": repo.sha, "size": 0, "path": folder})
                for p in repo.files:
                    if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                        entries.append(repo.entry(p))
                if prefix and not entries:
                    return self._missing("entry")
                return self._json(entries)
            # paths-info: form-encoded `paths` (repeated)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            out = []
            for p in form.get("paths", []):
                if p in repo.files:
                    out.append(repo.entry(p))
                elif p in repo.folders():
                    out.append({"type": "directory", "oid": repo.sha, "size": 0, "path": p})
            return self._json(out)

        def _file(self, method: str, kind: str, repo_id: str, revision: str, filename: str) -> None:
            head = method == "HEAD"
            repo = server.repos.get((kind, repo_id))
            if repo is None:
                return self._missing("repo", head)
            if revision not in ("main", repo.sha):
                return self._missing("revision", head)
            if filename not in repo.files:
                return self._missing("entry", head)
            data = repo.files[filename]
            etag = repo.entry(filename)["oid"]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            headers["Content-Type"] = "application/octet-stream"
            status = 200
            if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
            self._send(status, data, headers, head)

        def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
            self._route("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._route("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

    return Handler
