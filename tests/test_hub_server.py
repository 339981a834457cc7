"""Tests of the fake Hub server against the real `huggingface_hub` / `transformers` clients."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from pathlib import Path

# tests/ is on sys.path (pytest "prepend" import mode, no tests/__init__.py), like for conftest.py.
import hub_server
import pytest
from hub_server import DEFAULT_TOKEN, FakeHubServer, patch_hub_client
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

fake_hub = hub_server.fake_hub  # make the fixture available to this module

REPO_ID = "user/tiny-vit"
README = """---
license: mit
library_name: transformers
pipeline_tag: image-classification
tags:
- vision
---
# Tiny ViT

Test model card.
"""
# Small binary (not valid PNG pixels, but binary like one): must be routed to LFS by content sniffing.
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def _make_folder(root: Path) -> Path:
    """A model folder with a 12 MB binary, a PNG, a small json and a README with YAML front matter."""
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(12 * 1024 * 1024))
    (root / "sample.png").write_bytes(PNG_BYTES)
    (root / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32}))
    (root / "README.md").write_text(README)
    return root


def _upload(server: FakeHubServer, folder: Path, *, private: bool = True) -> str:
    api = HfApi(endpoint=server.url, token=DEFAULT_TOKEN)
    api.create_repo(REPO_ID, private=private, exist_ok=True)
    return api.upload_folder(repo_id=REPO_ID, folder_path=folder, commit_message="Upload model").oid


def _last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_create_repo_and_upload_folder(fake_hub: FakeHubServer, tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "model")
    api = HfApi(endpoint=fake_hub.url, token=DEFAULT_TOKEN)

    repo_url = api.create_repo(REPO_ID, private=True, exist_ok=True)
    assert repo_url.repo_id == REPO_ID
    assert api.create_repo(REPO_ID, private=True, exist_ok=True).repo_id == REPO_ID
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO_ID)
    assert conflict.value.response.status_code == 409

    commit = api.upload_folder(repo_id=REPO_ID, folder_path=folder, commit_message="Upload model")

    stored = fake_hub.files(REPO_ID)
    assert set(stored) == {".gitattributes", "model.safetensors", "sample.png", "config.json", "README.md"}
    for path in folder.iterdir():
        assert stored[path.name] == path.read_bytes()
    assert fake_hub.commits(REPO_ID)[-1].title == "Upload model"

    tree = {entry.path: entry for entry in api.list_repo_tree(REPO_ID, recursive=True)}
    weights = (folder / "model.safetensors").read_bytes()
    assert tree["model.safetensors"].lfs is not None
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert tree["sample.png"].lfs is not None
    assert tree["config.json"].lfs is None and tree["README.md"].lfs is None

    info = api.model_info(REPO_ID)
    assert info.sha == commit.oid == api.repo_info(REPO_ID, revision="main").sha
    assert info.private is True
    assert info.pipeline_tag == "image-classification"
    assert info.card_data is not None and info.card_data.license == "mit"
    assert {s.rfilename for s in info.siblings or []} == set(stored)
    assert [p.path for p in api.get_paths_info(REPO_ID, ["config.json", "missing.txt"])] == ["config.json"]

    calls = [(r.method, r.path.split("?")[0]) for r in fake_hub.requests]
    assert ("POST", "/api/validate-yaml") in calls
    assert ("POST", f"/{REPO_ID}.git/info/lfs/objects/batch") in calls
    assert sum(method == "PUT" for method, _ in calls) == 2  # model.safetensors + sample.png
    writes = [r for r in fake_hub.requests if r.method == "POST"]
    assert all(r.headers["authorization"] == f"Bearer {DEFAULT_TOKEN}" for r in writes)

    # Re-uploading identical content is a no-op: the client compares the oids returned by preupload.
    again = api.upload_folder(repo_id=REPO_ID, folder_path=folder, commit_message="Again")
    assert again.oid == commit.oid
    assert len(fake_hub.commits(REPO_ID)) == 2  # initial commit + upload


def test_download_in_subprocess_returns_identical_bytes(fake_hub: FakeHubServer, tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "model")
    commit_oid = _upload(fake_hub, folder, private=True)
    hf_home = tmp_path / "hf_home"

    code = f"""
import json
from huggingface_hub import hf_hub_download, snapshot_download
snapshot = snapshot_download({REPO_ID!r})
single = hf_hub_download({REPO_ID!r}, "model.safetensors", revision={commit_oid!r})
print(json.dumps({{"snapshot": snapshot, "single": single}}))
"""
    result = fake_hub.run_python(code, hf_home)
    assert result.returncode == 0, result.stderr
    paths = _last_json_line(result.stdout)

    snapshot = Path(paths["snapshot"])
    assert snapshot.name == commit_oid
    for path in folder.iterdir():
        assert (snapshot / path.name).read_bytes() == path.read_bytes()
    assert Path(paths["single"]).read_bytes() == (folder / "model.safetensors").read_bytes()

    resolves = [r for r in fake_hub.requests if "/resolve/" in r.path]
    assert resolves and all(r.headers.get("authorization") == f"Bearer {DEFAULT_TOKEN}" for r in resolves)
    # The token travels in headers only: nothing written by the client contains it.
    for file in hf_home.rglob("*"):
        if file.is_file():
            assert DEFAULT_TOKEN.encode() not in file.read_bytes(), file


def test_wrong_or_missing_token_is_rejected(fake_hub: FakeHubServer, tmp_path: Path) -> None:
    bad = HfApi(endpoint=fake_hub.url, token="hf_wrong_token")
    with pytest.raises(HfHubHTTPError) as create_error:
        bad.create_repo(REPO_ID, private=True, exist_ok=True)
    assert create_error.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as whoami_error:
        bad.whoami()
    assert whoami_error.value.response.status_code == 401
    assert fake_hub.repo(REPO_ID) is None

    good = HfApi(endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    good.create_repo(REPO_ID, private=True)
    assert good.whoami()["name"] == "user"
    with pytest.raises(HfHubHTTPError) as upload_error:
        bad.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=REPO_ID)
    assert upload_error.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as anonymous_error:
        HfApi(endpoint=fake_hub.url, token=False).upload_file(
            path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=REPO_ID
        )
    assert anonymous_error.value.response.status_code == 401
    assert set(fake_hub.files(REPO_ID)) == {".gitattributes"}

    # A private repo is invisible without a token (the Hub answers 401 + RepoNotFound).
    fake_hub.seed(REPO_ID, {"config.json": b"{}"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO_ID, "config.json", endpoint=fake_hub.url, token=False, cache_dir=tmp_path)


def test_missing_repo_revision_and_file_errors(fake_hub: FakeHubServer, tmp_path: Path) -> None:
    fake_hub.seed("user/public", {"config.json": b'{"a": 1}', "nested/dir/file.txt": b"hello"})
    kwargs = {"endpoint": fake_hub.url, "token": False, "cache_dir": tmp_path}

    assert Path(hf_hub_download("user/public", "nested/dir/file.txt", **kwargs)).read_bytes() == b"hello"
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("user/public", "missing.json", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/missing", "config.json", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/public", "config.json", revision="v1.0", **kwargs)

    api = HfApi(endpoint=fake_hub.url, token=False)
    top = [entry.path for entry in api.list_repo_tree("user/public")]
    assert top == [".gitattributes", "config.json", "nested"]
    assert [entry.path for entry in api.list_repo_tree("user/public", "nested", recursive=True)] == [
        "nested/dir",
        "nested/dir/file.txt",
    ]


def test_transformers_autoconfig_from_fake_hub(fake_hub: FakeHubServer, tmp_path: Path) -> None:
    # One subprocess (importing transformers costs seconds) that talks to the server through HF_ENDPOINT only:
    # it generates a tiny ViT config, pushes it with the default HfApi(), then loads it back from the Hub.
    code = f"""
import json, tempfile
from huggingface_hub import HfApi
from transformers import AutoConfig, ViTConfig
with tempfile.TemporaryDirectory() as folder:
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    config.save_pretrained(folder)
    HfApi().create_repo({REPO_ID!r}, exist_ok=True)
    HfApi().upload_folder(repo_id={REPO_ID!r}, folder_path=folder)
cfg = AutoConfig.from_pretrained({REPO_ID!r})
print(json.dumps({{"type": cfg.model_type, "hidden": cfg.hidden_size, "inter": cfg.intermediate_size}}))
"""
    result = fake_hub.run_python(code, tmp_path / "hf_home")
    assert result.returncode == 0, result.stderr
    assert _last_json_line(result.stdout) == {"type": "vit", "hidden": 32, "inter": 37}

    uploaded = json.loads(fake_hub.files(REPO_ID)["config.json"])
    assert uploaded["model_type"] == "vit" and uploaded["hidden_size"] == 32
    # transformers resolves "main" to the commit oid (repo info), then fetches the file at that commit.
    head = fake_hub.commits(REPO_ID)[-1].oid
    downloads = [(r.method, r.path, r.status) for r in fake_hub.requests if "/resolve/" in r.path]
    assert ("GET", f"/{REPO_ID}/resolve/{head}/config.json", 200) in downloads


def test_patch_hub_client_redirects_default_endpoint(
    fake_hub: FakeHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_hub_client(monkeypatch, fake_hub, tmp_path / "hf_home")
    HfApi().create_repo(REPO_ID)

    ModelCard(README).push_to_hub(REPO_ID)  # module-level API + constants.ENDPOINT for validate-yaml
    assert fake_hub.files(REPO_ID)["README.md"] == README.encode()
    downloaded = Path(hf_hub_download(REPO_ID, "README.md"))
    assert downloaded.read_text() == README
    assert downloaded.is_relative_to(tmp_path / "hf_home" / "hub")

    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        HfApi().upload_file(
            path_or_fileobj=b"---\nlicense: [oops\n---\n", path_in_repo="README.md", repo_id=REPO_ID
        )


def test_lfs_upload_accepts_chunked_body_and_checks_signature(fake_hub: FakeHubServer) -> None:
    fake_hub.seed(REPO_ID, {})
    payload = os.urandom(4096)
    oid = hashlib.sha256(payload).hexdigest()
    batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(payload)}]})
    host, port = fake_hub.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request(
        "POST",
        f"/{REPO_ID}.git/info/lfs/objects/batch",
        body=batch,
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}", "Content-Type": "application/json"},
    )
    href = json.loads(connection.getresponse().read())["objects"][0]["actions"]["upload"]["href"]
    target = href.removeprefix(fake_hub.url)

    connection.request("PUT", target.split("?")[0] + "?signature=forged", body=payload)
    forged = connection.getresponse()
    forged.read()
    assert forged.status == 403

    chunks = (payload[i : i + 1000] for i in range(0, len(payload), 1000))
    connection.request("PUT", target, body=chunks, encode_chunked=True)
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200

    # The object is now stored: the batch answer has no upload action, so the client sends no PUT.
    api = HfApi(endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    commit = api.upload_file(path_or_fileobj=payload, path_in_repo="weights.bin", repo_id=REPO_ID)
    assert fake_hub.files(REPO_ID, revision=commit.oid)["weights.bin"] == payload
    assert [r.method for r in fake_hub.requests].count("PUT") == 2  # forged + chunked, none by the client
