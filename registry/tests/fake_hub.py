"""A fake Hugging Face Hub on 127.0.0.1, for driving the real ``huggingface_hub`` client.

It speaks the endpoints ``huggingface_hub`` 0.36 calls for create_repo -> upload_folder ->
model_info / list_models -> hf_hub_download / snapshot_download (read from its source):

==========================================================  ===============================
``POST /api/repos/create``                                  create_repo (409 + url if exists)
``POST /api/validate-yaml``                                 README.md front matter check
``POST /api/models/{repo}/preupload/{rev}``                 upload mode per file (lfs/regular)
``POST /{repo}.git/info/lfs/objects/batch``                 LFS batch API, "basic" transfer
``PUT /__lfs/{oid}``, ``POST /__lfs/{oid}/verify``           LFS object upload + verify
``POST /api/models/{repo}/commit/{rev}``                    NDJSON commit (file/lfsFile/deleted*)
``GET /api/models/{repo}[/revision/{rev}]``                 model_info (sha, siblings, tags)
``GET /api/models?filter=..&author=..``                     list_models (tags ANDed)
``HEAD|GET /{repo}/resolve/{rev}/{path}``                   file metadata / content; LFS files
                                                            302 to ``/__cdn/{sha256}`` like the Hub
``GET /__cdn/{sha256}``                                     LFS content (Range supported)
==========================================================  ===============================

Like the Hub, ``*.safetensors`` files go through LFS and the rest as base64 in the commit;
a new repo starts with a commit holding ``.gitattributes``. Not emulated: auth scopes,
multipart/Xet uploads, pull requests, ``list_repo_tree``, gated repos.

Faults for tests (``hub.faults[...] = ...``): ``drop_download`` (file name: send half of
it, then close), ``fail_commit`` (HTTP status; ``fail_commit_to``: only for that repo, with
500), ``close_commit`` (close without answer),
``fail_create`` (HTTP status). ``require_token=True`` answers 401 to writes without one.

The server is bounded: it binds a random loopback port, serves from daemon threads with a
socket timeout, and stops by itself after ``lifetime`` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")
LFS_SIZE = 10 * 1024 * 1024
MAX_BODY = 64 * 1024 * 1024
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
)
_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def front_matter(readme: bytes | None) -> dict[str, Any]:
    if not readme:
        return {}
    text = readme.decode("utf-8", "replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else {}


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    lfs: set[str]
    message: str
    parent: str | None
    when: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if rev in self.commits:
            return self.commits[rev]
        if re.fullmatch(r"[0-9a-f]{7,39}", rev):
            found = [c for s, c in self.commits.items() if s.startswith(rev)]
            if len(found) == 1:
                return found[0]
        return None


class FakeHub:
    """The fake Hub's state and server.

    Example::

        with FakeHub() as hub:
            HfApi(endpoint=hub.url, token="x").create_repo("org/a")
            assert hub.commits("org/a")
    """

    def __init__(self, lifetime: float = 120.0, require_token: bool = False) -> None:
        self.lifetime = lifetime
        self.require_token = require_token
        self.repos: dict[str, Repo] = {}
        self.lfs_blobs: dict[str, bytes] = {}
        self.faults: dict[str, Any] = {}
        self.log: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- state helpers (tests use these too) ----------------------------------------------
    def commits(self, repo_id: str) -> list[str]:
        """Commit shas of ``repo_id``, oldest first (initial .gitattributes commit included)."""
        with self.lock:
            repo = self.repos.get(repo_id)
            return [] if repo is None else list(repo.commits)

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        with self.lock:
            commit = self.repos[repo_id].resolve(rev)
            assert commit is not None
            return dict(commit.files)

    def commit(self, repo_id: str, changes: dict[str, bytes | None], message: str = "edit") -> str:
        """Commit directly (as another Hub user would): ``None`` deletes a path."""
        with self.lock:
            repo = self.repos[repo_id]
            head = repo.commits[repo.branches["main"]]
            files, lfs = dict(head.files), set(head.lfs)
            for path, data in changes.items():
                if data is None:
                    files.pop(path, None)
                    lfs.discard(path)
                else:
                    files[path] = data
                    if path.endswith(LFS_SUFFIXES):
                        lfs.add(path)
                        self.lfs_blobs[sha256(data)] = data
            return self._new_commit(repo, "main", files, lfs, message)

    def _new_commit(
        self, repo: Repo, branch: str, files: dict[str, bytes], lfs: set[str], message: str
    ) -> str:
        self._counter += 1
        parent = repo.branches.get(branch)
        listing = json.dumps({p: sha256(d) for p, d in sorted(files.items())})
        sha = hashlib.sha1(f"{parent}\n{listing}\n{message}\n{self._counter}".encode()).hexdigest()
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        repo.commits[sha] = Commit(sha, files, lfs, message, parent, now)
        repo.branches[branch] = sha
        return sha

    def create(self, repo_id: str, private: bool = False) -> None:
        with self.lock:
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            repo = self.repos[repo_id] = Repo(repo_id, private, now)
            self._new_commit(
                repo, "main", {".gitattributes": GITATTRIBUTES}, set(), "initial commit"
            )

    def model_json(
        self, repo: Repo, commit: Commit, blobs: bool = False, full: bool = True
    ) -> dict[str, Any]:
        meta = front_matter(commit.files.get("README.md"))
        tags = [t for t in meta.get("tags") or [] if isinstance(t, str)]
        out: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "private": repo.private,
            "tags": tags,
            "library_name": meta.get("library_name"),
            "lastModified": commit.when,
            "createdAt": repo.created,
            "downloads": 0,
            "likes": 0,
        }
        if full:
            out["sha"] = commit.sha
            out["cardData"] = meta or None
            siblings = []
            for path, data in sorted(commit.files.items()):
                sib: dict[str, Any] = {"rfilename": path}
                if blobs:
                    sib["size"] = len(data)
                    sib["blobId"] = git_sha1(data)
                    if path in commit.lfs:
                        sib["lfs"] = {"size": len(data), "sha256": sha256(data), "pointerSize": 134}
                siblings.append(sib)
            out["siblings"] = siblings
        return out


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    timeout = 10  # socket timeout: a stuck client cannot hold a thread for long
    server_version = "FakeHub/1"

    # -- plumbing -----------------------------------------------------------------------
    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        with self.hub.lock:
            self.hub.log.append((method, self.path))
        for pattern, verb, name in ROUTES:
            if verb != method:
                continue
            match = re.fullmatch(pattern, parts.path)
            if match:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                getattr(self, name)(**args)
                return
        self._error(404, "Not found", code=None)

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def _json_body(self) -> Any:
        return json.loads(self._body() or b"{}")

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _authorised(self) -> bool:
        if self.hub.require_token and not self.headers.get("Authorization", "").startswith(
            "Bearer "
        ):
            self._error(401, "Invalid username or password.", None)
            return False
        return True

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        hidden = (
            repo is not None
            and repo.private
            and self.hub.require_token
            and not self.headers.get("Authorization")
        )
        if repo is None or hidden:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _commit_of(self, repo: Repo, rev: str) -> Commit | None:
        commit = repo.resolve(rev)
        if commit is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    # -- writes -------------------------------------------------------------------------
    def create_repo(self) -> None:
        body = self._json_body()
        if not self._authorised():
            return
        if "fail_create" in self.hub.faults:
            self._error(int(self.hub.faults["fail_create"]), "create failed", None)
            return
        org, name = body.get("organization") or "user", body["name"]
        repo_id = f"{org}/{name}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                self._json(
                    409,
                    {
                        "error": "You already created this model repo",
                        "url": f"{self.hub.url}/{repo_id}",
                    },
                )
                return
            self.hub.create(repo_id, bool(body.get("private")))
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self) -> None:
        body = self._json_body()
        errors = []
        try:
            meta = front_matter(body.get("content", "").encode())
        except yaml.YAMLError as exc:
            meta, errors = {}, [{"message": f"invalid YAML: {exc}"}]
        for key in ("tags", "base_model"):
            value = meta.get(key)
            if value is not None and not isinstance(value, (str, list)):
                errors.append({"message": f"'{key}' must be a string or a list of strings"})
        for entry in meta.get("model-index") or []:
            if not isinstance(entry, dict) or not entry.get("name"):
                errors.append({"message": "model-index entries need a 'name'"})
        if errors:
            self._json(400, {"errors": errors, "warnings": []})
        else:
            self._json(200, {"errors": [], "warnings": []})

    def preupload(self, repo: str, rev: str) -> None:
        body = self._json_body()
        if not self._authorised() or (r := self._repo(repo)) is None:
            return
        with self.hub.lock:
            commit = r.resolve(rev)
            files = []
            for f in body.get("files", []):
                path, size = f["path"], int(f["size"])
                lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE
                oid = None
                if commit is not None and path in commit.files:
                    data = commit.files[path]
                    oid = sha256(data) if lfs else git_sha1(data)
                files.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
        self._json(200, {"files": files, "commitOid": commit.sha if commit else None})

    def lfs_batch(self, repo: str) -> None:
        body = self._json_body()
        if not self._authorised() or self._repo(repo) is None:
            return
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if oid not in self.hub.lfs_blobs:
                entry["authenticated"] = True
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/__lfs/{oid}"},
                    "verify": {"href": f"{self.hub.url}/__lfs/{oid}/verify"},
                }
            objects.append(entry)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def lfs_put(self, oid: str) -> None:
        data = self._body()
        if sha256(data) != oid:
            self._error(400, "sha256 of the body does not match the object id", None)
            return
        with self.hub.lock:
            self.hub.lfs_blobs[oid] = data
        self._send(200, b"")

    def lfs_verify(self, oid: str) -> None:
        body = self._json_body()
        data = self.hub.lfs_blobs.get(oid)
        if data is None or len(data) != int(body.get("size", -1)):
            self._error(404, "object not uploaded", None)
            return
        self._json(200, {"oid": oid, "size": len(data)})

    def commit(self, repo: str, rev: str) -> None:
        raw = self._body()
        if not self._authorised() or (r := self._repo(repo)) is None:
            return
        if self.hub.faults.get("close_commit"):
            self.close_connection = True  # no answer at all: the client sees a dropped connection
            return
        if "fail_commit" in self.hub.faults or self.hub.faults.get("fail_commit_to") == repo:
            self._error(int(self.hub.faults.get("fail_commit", 500)), "commit failed", None)
            return
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            self._error(400, "first line must be the header", None)
            return
        header = lines[0]["value"]
        with self.hub.lock:
            head = r.resolve(rev)
            if head is None or rev not in r.branches:
                self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                return
            parent = header.get("parentCommit")
            if parent and not head.sha.startswith(parent):
                self._error(412, "parent commit is not the head of the branch", None)
                return
            files, lfs = dict(head.files), set(head.lfs)
            for op in lines[1:]:
                key, value = op.get("key"), op.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    files[path] = base64.b64decode(value["content"])
                    lfs.discard(path)
                elif key == "lfsFile":
                    blob = self.hub.lfs_blobs.get(value["oid"])
                    if blob is None or len(blob) != int(value["size"]):
                        self._error(422, f"LFS object {value['oid']} was not uploaded", None)
                        return
                    files[path] = blob
                    lfs.add(path)
                elif key == "deletedFile":
                    files.pop(path, None)
                    lfs.discard(path)
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        files.pop(p)
                        lfs.discard(p)
                else:
                    self._error(400, f"unknown operation {key!r}", None)
                    return
            sha = self.hub._new_commit(r, rev, files, lfs, header.get("summary", ""))
        self._json(
            200,
            {
                "commitUrl": f"{self.hub.url}/{repo}/commit/{sha}",
                "commitOid": sha,
                "success": True,
                "pullRequestUrl": None,
            },
        )

    # -- reads --------------------------------------------------------------------------
    def model_info(self, repo: str, rev: str = "main") -> None:
        if (r := self._repo(repo)) is None:
            return
        with self.hub.lock:
            commit = self._commit_of(r, rev)
            if commit is None:
                return
            data = self.hub.model_json(r, commit, blobs="blobs" in self.query)
        self._json(200, data)

    def model_info_main(self, repo: str) -> None:
        self.model_info(repo, "main")

    def list_models(self) -> None:
        wanted = self.query.get("filter", [])
        author = (self.query.get("author") or [None])[0]
        search = (self.query.get("search") or [""])[0].lower()
        limit = int((self.query.get("limit") or ["1000"])[0])
        full = (self.query.get("full") or [""])[0].lower() in ("1", "true")
        rows = []
        with self.hub.lock:
            for repo in self.hub.repos.values():
                if (
                    repo.private
                    and self.hub.require_token
                    and not self.headers.get("Authorization")
                ):
                    continue
                commit = repo.commits[repo.branches["main"]]
                row = self.hub.model_json(repo, commit, full=full)
                if author and row["author"] != author:
                    continue
                if search and search not in repo.repo_id.lower():
                    continue
                if all(tag in row["tags"] for tag in wanted):
                    rows.append(row)
        if (self.query.get("sort") or [""])[0] == "lastModified":
            rows.sort(key=lambda r: r["lastModified"], reverse=True)
        self._json(200, rows[:limit])

    def resolve(self, repo: str, rev: str, path: str) -> None:
        if (r := self._repo(repo)) is None:
            return
        with self.hub.lock:
            commit = self._commit_of(r, rev)
            if commit is None:
                return
            data = commit.files.get(path)
            is_lfs = path in commit.lfs
        if data is None:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if is_lfs:
            # like the Hub: metadata here, content from the "CDN" behind a redirect
            oid = sha256(data)
            headers.update(
                {
                    "X-Linked-Etag": f'"{oid}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{git_sha1(data)}"',
                    "Location": f"{self.hub.url}/__cdn/{oid}?name={quote(path)}",
                }
            )
            self._send(302, b"", headers)
            return
        headers["ETag"] = f'"{git_sha1(data)}"'
        self._content(data, path, headers)

    def cdn(self, oid: str) -> None:
        data = self.hub.lfs_blobs.get(oid)
        if data is None:
            self._error(404, "no such object", None)
            return
        name = (self.query.get("name") or [""])[0]
        self._content(data, name, {"ETag": f'"{oid}"'})

    def _content(self, data: bytes, path: str, headers: dict[str, str]) -> None:
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = min(int(match.group(1)), len(data))
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        drop = self.hub.faults.get("drop_download")
        if self.command == "GET" and drop is not None and path.rsplit("/", 1)[-1] == drop:
            # promise the whole file, send half, hang up: a connection lost mid-download
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, body, headers, content_type="application/octet-stream")


ROUTES = [
    (r"/api/repos/create", "POST", "create_repo"),
    (r"/api/validate-yaml", "POST", "validate_yaml"),
    (rf"/api/models/{_REPO}/preupload/(?P<rev>.+)", "POST", "preupload"),
    (rf"/api/models/{_REPO}/commit/(?P<rev>.+)", "POST", "commit"),
    (rf"/api/models/{_REPO}/revision/(?P<rev>.+)", "GET", "model_info"),
    (rf"/api/models/{_REPO}", "GET", "model_info_main"),
    (r"/api/models", "GET", "list_models"),
    (rf"/{_REPO}\.git/info/lfs/objects/batch", "POST", "lfs_batch"),
    (r"/__lfs/(?P<oid>[0-9a-f]{64})", "PUT", "lfs_put"),
    (r"/__lfs/(?P<oid>[0-9a-f]{64})/verify", "POST", "lfs_verify"),
    (rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "HEAD", "resolve"),
    (rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "GET", "resolve"),
    (r"/__cdn/(?P<oid>[0-9a-f]{64})", "GET", "cdn"),
]
