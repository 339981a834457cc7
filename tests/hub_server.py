"""A small in-process fake of the Hugging Face Hub HTTP API, for offline tests.

`FakeHubServer` is a `ThreadingHTTPServer` bound to ``127.0.0.1`` on a free port. It speaks enough of
the Hub protocol for the real `huggingface_hub` client (and therefore `transformers`) to:

* create / delete repos (``POST /api/repos/create``, ``DELETE /api/repos/delete``), ``GET /api/whoami-v2``;
* commit files: ``preupload`` (regular vs LFS decision), the Git LFS batch API with upload and verify
  hrefs pointing back to this server, and the NDJSON ``commit`` endpoint (``header``/``file``/``lfsFile``/
  ``deletedFile``/``deletedFolder`` lines);
* validate model-card metadata (``POST /api/validate-yaml``);
* read repo metadata (``/api/{models,datasets,spaces}/{repo}[/revision/{rev}]`` with ``sha``, ``siblings``,
  ``cardData``, ``pipeline_tag``...), ``tree`` listings (recursive or not) and ``paths-info``;
* download files with ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range`` requests).

Storage is in memory. Every repo starts with an "initial commit" holding a ``.gitattributes`` (like the
Hub); each commit gets a fresh 40-hex oid and a full snapshot of the tree, so a commit oid works as a
revision. Only the ``main`` branch exists. Errors use the Hub's conventions (JSON ``{"error": ...}`` body,
``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`` and ``X-Error-Message`` headers) so the
client raises its usual `RepositoryNotFoundError`, `RevisionNotFoundError`, `RemoteEntryNotFoundError`...

Authentication: ``Authorization: Bearer <token>`` is required for writes (and for private repos); any
request carrying a wrong token gets a 401 with ``X-Error-Message: Invalid credentials in Authorization
header``, i.e. a plain `HfHubHTTPError` with status 401 on the client side. Every request is appended to
`FakeHubServer.requests` (method, path, lower-cased headers, status) so tests can inspect the traffic.

Pointing the client at the server
---------------------------------
`huggingface_hub` reads ``HF_ENDPOINT`` (and ``HF_HUB_DISABLE_XET``, ``HF_HUB_OFFLINE``, cache paths...)
once, at import time, into `huggingface_hub.constants`; the module-level helpers (`upload_file`,
`ModelCard.push_to_hub`...) use an `HfApi` instance built at import time, and `transformers` caches its own
`HfApi`. Two supported ways:

1. **Subprocess (most robust, recommended for downloads and transformers)**: run the client code in a fresh
   interpreter with `FakeHubServer.client_env` (``HF_ENDPOINT=<server url>``, ``HF_HOME``/``HF_HUB_CACHE``
   in a temp dir, ``HF_TOKEN``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_TELEMETRY=1``, offline mode
   off) - or simply `FakeHubServer.run_python(code, hf_home)`.
2. **In process**: pass ``endpoint=server.url`` explicitly (``HfApi(endpoint=...)``,
   ``hf_hub_download(..., endpoint=...)``), or call `patch_hub_client` (a monkeypatch of
   `huggingface_hub.constants`, of the default `HfApi` instance and of transformers' cached `HfApi`) so
   code that relies on the default endpoint (``ModelCard.push_to_hub``, ``from_pretrained``...) hits the
   server. The `fake_hub` fixture already turns Xet and offline mode off in-process.

Xet: the installed `huggingface_hub` uploads LFS files through the Xet protocol (a separate CAS service)
whenever `hf_xet` is importable, and downloads through Xet when a ``X-Xet-Hash`` header is present. This
server never advertises Xet headers, so downloads always use plain HTTP; for uploads the client must have
Xet disabled (``HF_HUB_DISABLE_XET=1`` before import, or ``constants.HF_HUB_DISABLE_XET = True``), which
both helpers above do. A client that still tries Xet gets a 501 on ``/xet-write-token`` with an explicit
message. Alternatively ``FakeHubServer(lfs=False)`` answers ``regular`` for every file at preupload time,
which needs neither LFS nor Xet (binary files then travel base64-encoded inside the commit payload).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

DEFAULT_TOKEN = "hf_test_token"
DEFAULT_USER = "user"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS

_REPO_TYPE_FROM_API = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
_XET_MESSAGE = (
    "FakeHubServer does not implement the Xet protocol: set HF_HUB_DISABLE_XET=1 before importing "
    "huggingface_hub (or patch huggingface_hub.constants.HF_HUB_DISABLE_XET = True)."
)

DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.msgpack", "*.npy",
        "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors",
        "*.tar", "*.tflite", "*.tgz", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # fmt: skip


def git_blob_oid(data: bytes) -> str:
    """Return the git object id (sha1) of a blob with content ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the Git LFS pointer file that stands in the git tree for an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _iso(moment: datetime) -> str:
    """Format a datetime the way the Hub does (``2024-01-31T12:00:00.000Z``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _front_matter(text: str) -> dict[str, Any] | None:
    """Parse the YAML front matter of a model card; raise `yaml.YAMLError`/`ValueError` when invalid."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return None
    data = yaml.safe_load(match.group(1))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("The metadata block of README.md must be a YAML mapping.")
    return data


@dataclass(frozen=True)
class StoredFile:
    """One file of a repo snapshot."""

    data: bytes
    lfs: bool
    sha256: str
    git_oid: str  # oid of the git blob: the content itself, or the LFS pointer for LFS files

    @classmethod
    def create(cls, data: bytes, *, lfs: bool, sha256: str | None = None) -> StoredFile:
        """Build a file, computing its hashes."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        blob = lfs_pointer(digest, len(data)) if lfs else data
        return cls(data=data, lfs=lfs, sha256=digest, git_oid=git_blob_oid(blob))

    @property
    def size(self) -> int:
        """Size of the content in bytes."""
        return len(self.data)

    @property
    def etag(self) -> str:
        """ETag served by ``/resolve``: the sha256 for LFS files, the git blob oid otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def lfs_info(self) -> dict[str, Any] | None:
        """The ``lfs`` object of the tree API, or None for regular files."""
        if not self.lfs:
            return None
        return {
            "oid": self.sha256,
            "size": self.size,
            "pointerSize": len(lfs_pointer(self.sha256, self.size)),
        }


@dataclass(frozen=True)
class Commit:
    """A commit: its oid, message and a full snapshot of the tree."""

    oid: str
    title: str
    description: str
    date: datetime
    tree: Mapping[str, StoredFile]


@dataclass
class Repo:
    """A repository; ``commits`` is the history of ``main``, oldest first."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        """The latest commit of ``main``."""
        return self.commits[-1]

    def resolve(self, revision: str) -> Commit:
        """Return the commit for ``main`` or a commit oid; raise RevisionNotFound otherwise."""
        if revision == "main":
            return self.head
        for commit in self.commits:
            if commit.oid == revision:
                return commit
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")


@dataclass(frozen=True)
class RecordedRequest:
    """One request received by the server (headers with lower-cased names)."""

    method: str
    path: str
    headers: dict[str, str]
    body_size: int
    status: int


class HubError(Exception):
    """An HTTP error answered the way the Hub does."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # additional fields of the JSON error body


@dataclass
class _Request:
    method: str
    target: str  # path and query string, as received
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(
        status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


_Route = tuple[frozenset[str], re.Pattern[str], Callable[[_Request, dict[str, str]], _Response]]

_API_REPO = r"/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_GIT_REPO = r"/(?:(?P<prefix>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+?)"


class FakeHubServer:
    """In-memory Hugging Face Hub served over HTTP on ``127.0.0.1`` (see the module docstring).

    Args:
        token: the only valid access token.
        user: the user name that token belongs to (returned by ``whoami`` and used as default namespace).
        lfs: when False, ``preupload`` answers ``regular`` for every file (no LFS, no Xet needed).
        lfs_threshold: files at least this large are stored in LFS; binary files and files matching the
            LFS patterns of the repo's ``.gitattributes`` are LFS too (like on the Hub).
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        lfs: bool = True,
        lfs_threshold: int = LFS_SIZE_THRESHOLD,
    ) -> None:
        self.token = token
        self.user = user
        self.lfs = lfs
        self.lfs_threshold = lfs_threshold
        self.requests: list[RecordedRequest] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lfs_objects: dict[str, bytes] = {}
        self._pending_uploads: dict[str, tuple[str, int]] = {}  # signature -> (oid, size)
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[_Route] = [
            self._route("POST", r"/api/repos/create", self._create_repo),
            self._route("DELETE", r"/api/repos/delete", self._delete_repo),
            self._route("GET", r"/api/whoami-v2", self._whoami),
            self._route("POST", r"/api/validate-yaml", self._validate_yaml),
            self._route("GET", _API_REPO + r"(?:/revision/(?P<rev>[^/]+))?", self._repo_info),
            self._route("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", self._tree),
            self._route("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)", self._paths_info),
            self._route("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)", self._preupload),
            self._route("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)", self._commit),
            self._route("GET POST", _API_REPO + r"/xet-(?:read|write)-token(?:/.*)?", self._xet_token),
            self._route("POST", _GIT_REPO + r"\.git/info/lfs/objects/batch", self._lfs_batch),
            self._route("PUT", r"/__lfs__/upload/(?P<oid>[0-9a-f]{64})", self._lfs_upload),
            self._route("POST", r"/__lfs__/verify", self._lfs_verify),
            self._route("GET HEAD", _GIT_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError("FakeHubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHubServer:
        """Bind a free port and serve in a background thread."""
        if self._httpd is not None:
            return self
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeHubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers

    def files(self, repo_id: str, *, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Return ``{path: content}`` of a repo at ``revision`` (``.gitattributes`` included)."""
        with self._lock:
            commit = self._existing_repo(repo_type, repo_id).resolve(revision)
            return {path: stored.data for path, stored in commit.tree.items()}

    def commits(self, repo_id: str, *, repo_type: str = "model") -> list[Commit]:
        """Return the history of ``main``, oldest first (the first one is the initial commit)."""
        with self._lock:
            return list(self._existing_repo(repo_type, repo_id).commits)

    def repo(self, repo_id: str, *, repo_type: str = "model") -> Repo | None:
        """Return the stored repo, or None if it does not exist."""
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def seed(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        repo_type: str = "model",
        private: bool = False,
        message: str = "Seed files",
    ) -> str:
        """Create the repo if needed and commit ``files`` directly (no HTTP); return the head commit oid."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._new_repo(repo_type, repo_id, private)
            if not files:
                return repo.head.oid
            tree = dict(repo.head.tree)
            gitattributes = tree[".gitattributes"].data.decode() if ".gitattributes" in tree else ""
            for path, data in files.items():
                tree[path] = StoredFile.create(
                    data, lfs=self._is_lfs(path, len(data), data[:512], gitattributes)
                )
            return self._add_commit(repo, message, "", tree).oid

    def client_env(
        self,
        hf_home: str | os.PathLike[str],
        *,
        token: str | bool = True,
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Environment for a subprocess whose `huggingface_hub`/`transformers` must talk to this server.

        ``token=True`` exports this server's token as ``HF_TOKEN``, a string exports that token, False none.
        Caches go under ``hf_home``; offline mode, Xet, telemetry and progress bars are turned off.
        """
        env = dict(os.environ if base is None else base)
        for name in (
            "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE",
            "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH", "TRANSFORMERS_CACHE", "HUGGINGFACE_CO_STAGING",
        ):  # fmt: skip
            env.pop(name, None)
        home = Path(hf_home)
        no_proxy = ",".join(
            filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1", "localhost"])
        )
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=str(home),
            HF_HUB_CACHE=str(home / "hub"),
            HF_HUB_OFFLINE="0",
            TRANSFORMERS_OFFLINE="0",
            HF_DATASETS_OFFLINE="0",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="0",
            DO_NOT_TRACK="1",
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        )
        if token is not False:
            env["HF_TOKEN"] = self.token if token is True else str(token)
        return env

    def run_python(
        self,
        code: str,
        hf_home: str | os.PathLike[str],
        *,
        token: str | bool = True,
        timeout: float = 120,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code`` with `client_env` (plus ``env`` overrides); the caller checks the result."""
        return subprocess.run(
            [sys.executable, "-c", code],
            env={**self.client_env(hf_home, token=token), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )

    # ------------------------------------------------------------------ request handling

    @staticmethod
    def _route(
        methods: str, pattern: str, handler: Callable[[_Request, dict[str, str]], _Response]
    ) -> _Route:
        return frozenset(methods.split()), re.compile(pattern), handler

    def handle(self, request: _Request) -> _Response:
        """Answer a request (called by the HTTP handler) and record it in `requests`."""
        response = self._respond(request)
        entry = RecordedRequest(
            method=request.method,
            path=request.target,
            headers={name.lower(): value for name, value in request.headers.items()},
            body_size=len(request.body),
            status=response.status,
        )
        with self._lock:
            self.requests.append(entry)
        return response

    def _respond(self, request: _Request) -> _Response:
        """Route a request and turn errors into Hub-style responses."""
        try:
            user = self._authenticate(request)
            for methods, pattern, handler in self._routes:
                match = pattern.fullmatch(request.path)
                if match is not None and request.method in methods:
                    params = {
                        key: unquote(value) for key, value in match.groupdict().items() if value is not None
                    }
                    params["_user"] = user or ""
                    with self._lock:
                        return handler(request, params)
            raise HubError(404, f"Not found: {request.method} {request.path}")
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code is not None:
                headers["X-Error-Code"] = err.code
            return _json({**err.extra, "error": err.message}, err.status, headers)
        except Exception as err:  # surface server bugs to the client instead of hanging
            return _json({"error": f"FakeHubServer internal error: {err!r}"}, 500)

    def _authenticate(self, request: _Request) -> str | None:
        """Return the user for a valid token, None without token; raise 401 for a wrong token."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:
            raise HubError(401, _BAD_TOKEN_MESSAGE)
        return self.user

    @staticmethod
    def _require_user(params: Mapping[str, str]) -> str:
        if not params.get("_user"):
            raise HubError(401, "Invalid username or password.")
        return params["_user"]

    def _existing_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _visible_repo(self, params: Mapping[str, str], *, write: bool = False) -> Repo:
        """Resolve the repo named by the URL, enforcing authentication for writes and private repos."""
        if write:
            self._require_user(params)
        if "kind" in params:
            repo_type = _REPO_TYPE_FROM_API[params["kind"]]
        else:
            repo_type = {"datasets": "dataset", "spaces": "space"}.get(params.get("prefix", ""), "model")
        repo = self._existing_repo(repo_type, f"{params['ns']}/{params['name']}")
        if repo.private and not params.get("_user"):
            raise HubError(401, "Repository not found", code="RepoNotFound")
        return repo

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=datetime.now(UTC))
        self._repos[(repo_type, repo_id)] = repo
        initial = {".gitattributes": StoredFile.create(DEFAULT_GITATTRIBUTES.encode(), lfs=False)}
        self._add_commit(repo, "initial commit", "", initial)
        return repo

    @staticmethod
    def _add_commit(repo: Repo, title: str, description: str, tree: dict[str, StoredFile]) -> Commit:
        commit = Commit(
            oid=secrets.token_hex(20), title=title, description=description, date=datetime.now(UTC), tree=tree
        )
        repo.commits.append(commit)
        return commit

    def _is_lfs(self, path: str, size: int, sample: bytes, gitattributes: str) -> bool:
        """Decide like the Hub: .gitattributes LFS patterns, size threshold, or binary content."""
        if not self.lfs or size == 0:
            return False
        if size >= self.lfs_threshold or b"\x00" in sample:
            return True
        patterns = [line.split()[0] for line in gitattributes.splitlines() if "filter=lfs" in line]
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch(path, pattern) or fnmatch(name, pattern) for pattern in patterns)

    # ------------------------------------------------------------------ endpoints: repos & users

    def _create_repo(self, request: _Request, params: dict[str, str]) -> _Response:
        user = self._require_user(params)
        body = request.json()
        name = body.get("name") or ""
        namespace = body.get("organization") or user
        repo_type = body.get("type") or "model"
        if (
            repo_type not in _URL_PREFIX
            or not _REPO_NAME.fullmatch(name)
            or not _REPO_NAME.fullmatch(namespace)
        ):
            raise HubError(400, f"Invalid repo name or type: {namespace}/{name} ({repo_type})")
        repo_id = f"{namespace}/{name}"
        existing = self._repos.get((repo_type, repo_id))
        if existing is not None:
            raise HubError(
                409,
                f"You already created this {repo_type} repo: {repo_id}",
                extra={"url": self._repo_url(existing)},  # the client reads it when exist_ok=True
            )
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = self._new_repo(repo_type, repo_id, private)
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self, request: _Request, params: dict[str, str]) -> _Response:
        user = self._require_user(params)
        body = request.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or user}/{body.get('name')}"
        self._existing_repo(repo_type, repo_id)
        del self._repos[(repo_type, repo_id)]
        return _json({})

    def _whoami(self, request: _Request, params: dict[str, str]) -> _Response:
        user = self._require_user(params)
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": "Test User",
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            }
        )

    def _validate_yaml(self, request: _Request, params: dict[str, str]) -> _Response:
        content = request.json().get("content", "")
        try:
            _front_matter(content)
        except (yaml.YAMLError, ValueError) as err:
            message = f"Invalid YAML metadata: {err}"
            return _json({"errors": [{"message": message}], "warnings": [], "error": message}, 400)
        return _json({"errors": [], "warnings": []})

    def _xet_token(self, request: _Request, params: dict[str, str]) -> _Response:
        raise HubError(501, _XET_MESSAGE)

    # ------------------------------------------------------------------ endpoints: reading

    def _repo_info(self, request: _Request, params: dict[str, str]) -> _Response:
        repo = self._visible_repo(params)
        commit = repo.resolve(params.get("rev", "main"))
        card: dict[str, Any] | None = None
        if "README.md" in commit.tree:
            try:
                card = _front_matter(commit.tree["README.md"].data.decode("utf-8", errors="replace"))
            except (yaml.YAMLError, ValueError):
                card = None
        namespace = repo.repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": namespace,
            "sha": commit.oid,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [tag for tag in (card or {}).get("tags") or [] if isinstance(tag, str)],
            "siblings": [self._sibling(path, stored) for path, stored in sorted(commit.tree.items())],
        }
        if card is not None:
            info["cardData"] = card
            if repo.repo_type == "model":
                for key in ("pipeline_tag", "library_name"):
                    if isinstance(card.get(key), str):
                        info[key] = card[key]
        return _json(info)

    @staticmethod
    def _sibling(path: str, stored: StoredFile) -> dict[str, Any]:
        sibling: dict[str, Any] = {"rfilename": path, "size": stored.size, "blobId": stored.git_oid}
        if (lfs := stored.lfs_info()) is not None:
            sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
        return sibling

    @staticmethod
    def _directories(tree: Mapping[str, StoredFile]) -> set[str]:
        return {"/".join(parts[:i]) for parts in (p.split("/") for p in tree) for i in range(1, len(parts))}

    @staticmethod
    def _entry(path: str, commit: Commit, *, expand: bool) -> dict[str, Any]:
        stored = commit.tree.get(path)
        if stored is None:
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        else:
            entry = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
            if (lfs := stored.lfs_info()) is not None:
                entry["lfs"] = lfs
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": _iso(commit.date)}
        return entry

    def _tree(self, request: _Request, params: dict[str, str]) -> _Response:
        repo = self._visible_repo(params)
        commit = repo.resolve(params["rev"])
        base = params.get("path", "").strip("/")
        recursive = request.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = request.query.get("expand", ["false"])[0].lower() in ("1", "true")
        directories = self._directories(commit.tree)
        if base and base not in directories:
            raise HubError(404, f"Entry not found: {base}", code="EntryNotFound")
        prefix = f"{base}/" if base else ""
        paths = [
            path
            for path in sorted(directories | set(commit.tree))
            if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])
        ]
        return _json([self._entry(path, commit, expand=expand) for path in paths])

    def _paths_info(self, request: _Request, params: dict[str, str]) -> _Response:
        repo = self._visible_repo(params)
        commit = repo.resolve(params["rev"])
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        if "json" in (request.headers.get("Content-Type") or ""):
            payload = request.json()
            form = {"paths": list(payload.get("paths", [])), "expand": [str(payload.get("expand", False))]}
        expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        directories = self._directories(commit.tree)
        found = [
            p.strip("/")
            for p in form.get("paths", [])
            if p.strip("/") in commit.tree or p.strip("/") in directories
        ]
        return _json([self._entry(path, commit, expand=expand) for path in found])

    def _resolve(self, request: _Request, params: dict[str, str]) -> _Response:
        repo = self._visible_repo(params)
        commit = repo.resolve(params["rev"])
        stored = commit.tree.get(params["path"])
        if stored is None:
            raise HubError(
                404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
        }
        if stored.lfs:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        data = stored.data
        range_header = request.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip()) if range_header else None
        if match is not None and (match.group(1) or match.group(2)):
            size = len(data)
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(size - int(match.group(2)), 0), size - 1
            if start >= size or start > end:
                raise HubError(
                    416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
                )
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return _Response(206, data[start : end + 1], headers)
        return _Response(200, data, headers)

    # ------------------------------------------------------------------ endpoints: writing

    def _preupload(self, request: _Request, params: dict[str, str]) -> _Response:
        repo = self._visible_repo(params, write=True)
        if request.query.get("create_pr"):
            raise HubError(400, "FakeHubServer does not support pull requests (create_pr)")
        commit = repo.resolve(params["rev"])
        gitattributes = commit.tree[".gitattributes"].data.decode() if ".gitattributes" in commit.tree else ""
        answers = []
        for item in request.json().get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            existing = commit.tree.get(path)
            remote_oid = None if existing is None else (existing.sha256 if existing.lfs else existing.git_oid)
            answers.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if self._is_lfs(path, size, sample, gitattributes) else "regular",
                    "shouldIgnore": False,
                    "oid": remote_oid,
                }
            )
        return _json({"files": answers, "commitOid": commit.oid})

    def _lfs_batch(self, request: _Request, params: dict[str, str]) -> _Response:
        self._visible_repo(params, write=True)
        body = request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "FakeHubServer only implements the LFS 'upload' operation")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if (
                not isinstance(oid, str)
                or not _SHA256.fullmatch(oid)
                or not isinstance(size, int)
                or size < 0
            ):
                objects.append(
                    {"oid": str(oid), "size": -1, "error": {"code": 422, "message": "Invalid object"}}
                )
                continue
            stored = self._lfs_objects.get(oid)
            if stored is not None and len(stored) == size:
                objects.append({"oid": oid, "size": size})  # already stored: no action => client skips upload
                continue
            signature = secrets.token_urlsafe(16)
            self._pending_uploads[signature] = (oid, size)
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{self.url}/__lfs__/upload/{oid}?signature={signature}"},
                        "verify": {"href": f"{self.url}/__lfs__/verify", "header": {}},
                    },
                }
            )
        payload = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        return _json(payload, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_upload(self, request: _Request, params: dict[str, str]) -> _Response:
        """Accept the bytes of an LFS object, like a pre-signed storage URL (no Authorization needed)."""
        signature = request.query.get("signature", [""])[0]
        pending = self._pending_uploads.get(signature)
        if pending is None or pending[0] != params["oid"]:
            raise HubError(403, "Invalid or expired upload signature")
        oid, size = pending
        if len(request.body) != size or hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {size}")
        del self._pending_uploads[signature]
        self._lfs_objects[oid] = request.body
        return _Response(
            200, b"", {"ETag": f'"{hashlib.md5(request.body, usedforsecurity=False).hexdigest()}"'}
        )

    def _lfs_verify(self, request: _Request, params: dict[str, str]) -> _Response:
        self._require_user(params)
        body = request.json()
        data = self._lfs_objects.get(str(body.get("oid")))
        if data is None or len(data) != body.get("size"):
            raise HubError(404, f"LFS object {body.get('oid')} was not uploaded")
        return _json({"success": True})

    def _commit(self, request: _Request, params: dict[str, str]) -> _Response:
        repo = self._visible_repo(params, write=True)
        if request.query.get("create_pr"):
            raise HubError(400, "FakeHubServer does not support pull requests (create_pr)")
        if params["rev"] != "main":
            raise HubError(
                404, f"Invalid rev id: {params['rev']} (only 'main' exists)", code="RevisionNotFound"
            )
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Invalid NDJSON commit payload: {err}") from err
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a 'header' line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head.oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.head.tree)
        for line in lines[1:]:
            self._apply_operation(tree, line.get("key"), line.get("value") or {})
        commit = self._add_commit(repo, header.get("summary") or "", header.get("description") or "", tree)
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _apply_operation(self, tree: dict[str, StoredFile], key: str | None, value: dict[str, Any]) -> None:
        path = str(value.get("path", ""))
        parts = path.rstrip("/").split("/")
        if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise HubError(400, f"Invalid path in commit: {path!r}")
        if key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else str(content).encode()
            tree[path] = StoredFile.create(data, lfs=False)
        elif key == "lfsFile":
            oid = str(value.get("oid"))
            data = self._lfs_objects.get(oid)
            if data is None or ("size" in value and value["size"] != len(data)):
                raise HubError(400, f"LFS object {oid} for {path!r} was never uploaded")
            tree[path] = StoredFile.create(data, lfs=True, sha256=oid)
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in tree if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
            for doomed_path in doomed:
                del tree[doomed_path]
        else:
            raise HubError(400, f"Unsupported commit operation: {key!r}")


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP/1.1 adapter: read the request, let `FakeHubServer.handle` answer, write the response."""

    protocol_version = "HTTP/1.1"
    timeout = 60

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF closing the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub: FakeHubServer = self.server.hub  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        request = _Request(
            method=self.command,
            target=self.path,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=self._read_body(),
        )
        response = hub.handle(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            # Header values must be single-line latin-1 (error messages may quote paths or YAML errors).
            safe = " ".join(value.splitlines()).encode("latin-1", "replace").decode("latin-1")
            self.send_header(name, safe)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def patch_hub_client(
    monkeypatch: pytest.MonkeyPatch,
    server: FakeHubServer,
    hf_home: str | os.PathLike[str],
    *,
    token: str | bool = True,
) -> None:
    """Point this process' already-imported `huggingface_hub` (and `transformers`) at ``server``.

    Patches `huggingface_hub.constants` (endpoint, URL template, caches, Xet/offline/telemetry switches),
    the endpoint of the module-level `HfApi` used by `upload_file`/`ModelCard.push_to_hub`..., resets
    transformers' cached `HfApi`, and sets ``HF_TOKEN`` (``token`` as in `FakeHubServer.client_env`).
    Everything is undone by ``monkeypatch`` at the end of the test.
    """
    from huggingface_hub import constants, hf_api

    home = Path(hf_home)
    for name, value in {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if token is False:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", server.token if token is True else str(token))


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubServer]:
    """A started `FakeHubServer` (token ``hf_test_token``, user ``user``), stopped after the test.

    In this process it only turns Xet, offline mode and telemetry off, so that explicit
    ``HfApi(endpoint=fake_hub.url, token=...)`` calls work; use `patch_hub_client` to also redirect the
    default endpoint, or `FakeHubServer.run_python` for a subprocess.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with FakeHubServer() as server:
        yield server
