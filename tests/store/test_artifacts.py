"""The artifact store: content addressed, atomic, and never hands out bytes that fail their hash."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from evertrain.exceptions import IntegrityError, NotFoundError, UsageError
from evertrain.store import Store
from evertrain.store import artifacts as artifacts_module
from evertrain.store.artifacts import ArtifactStore
from evertrain.store.formats import get_format


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["local", "memory"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """A local folder, and an fsspec URL that is not local (to take the generic path)."""
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    return ArtifactStore(f"memory://evertrain-test-{uuid.uuid4().hex}")


def test_bytes_are_stored_under_their_sha256(artifacts: ArtifactStore) -> None:
    data = b"model bytes"
    digest = artifacts.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert artifacts.get(digest) == data
    assert artifacts.exists(digest)
    assert artifacts.verify(digest)
    assert artifacts.path(digest).endswith(f"/sha256/{digest[:2]}/{digest[2:]}")


def test_a_digest_the_caller_computed_is_not_computed_again(
    artifacts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that just hashed the bytes passes the hash along; a read still checks it."""
    data = b"a large base model file"
    known = hashlib.sha256(data).hexdigest()
    hashed: list[bytes] = []
    real = artifacts_module.sha256_bytes
    monkeypatch.setattr(artifacts_module, "sha256_bytes", lambda d: hashed.append(d) or real(d))
    assert artifacts.put(data, digest=known) == known
    assert data not in hashed
    assert artifacts.get(known) == data
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    artifacts.put(data, digest=wrong)  # a caller's mistake is caught by the first read
    with pytest.raises(IntegrityError, match=wrong):
        artifacts.get(wrong)
    with pytest.raises(UsageError, match="64 lowercase hex"):
        artifacts.put(data, digest="not a digest")


def test_storing_the_same_bytes_twice_keeps_one_copy(tmp_path: Path) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    assert artifacts.put(b"same") == artifacts.put(b"same")
    blobs = files_under(tmp_path / "artifacts")
    assert [p.relative_to(tmp_path / "artifacts").parts[0] for p in blobs] == ["sha256"]
    assert len(blobs) == 1


def test_a_write_leaves_no_temporary_behind(tmp_path: Path) -> None:
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    for i in range(5):
        artifacts.put(f"blob {i}".encode())
    assert list((tmp_path / "artifacts" / "tmp").iterdir()) == []
    assert all("sha256" in p.parts for p in files_under(tmp_path / "artifacts"))


def test_a_leftover_temporary_is_never_read_as_a_blob(tmp_path: Path) -> None:
    """What a writer killed before its rename leaves behind does not count as stored."""
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    data = b"complete content"
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "artifacts" / "tmp").mkdir(parents=True)
    (tmp_path / "artifacts" / "tmp" / uuid.uuid4().hex).write_bytes(data[:5])
    assert not artifacts.exists(digest)
    with pytest.raises(NotFoundError):
        artifacts.get(digest)
    assert artifacts.put(data) == digest
    assert artifacts.get(digest) == data


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: bytes([b[0] ^ 1]) + b[1:],  # one flipped bit
        lambda b: b[:-1],  # truncated
        lambda b: b + b" ",  # grown
        lambda b: b"",  # emptied
    ],
    ids=["bit-flip", "truncated", "appended", "emptied"],
)
def test_a_corrupted_blob_is_refused(artifacts: ArtifactStore, damage: object) -> None:
    data = json.dumps({"weights": [1, 2, 3]}).encode()
    digest = artifacts.put(data)
    artifacts.fs.pipe_file(artifacts.path(digest), damage(data))  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=digest):
        artifacts.get(digest)
    assert not artifacts.verify(digest)


def test_a_missing_blob_is_not_found(artifacts: ArtifactStore) -> None:
    with pytest.raises(NotFoundError):
        artifacts.get("ab" * 32)
    assert not artifacts.verify("ab" * 32)


def test_storing_intact_bytes_again_repairs_a_corrupted_blob(artifacts: ArtifactStore) -> None:
    data = b"the real model"
    digest = artifacts.put(data)
    artifacts.fs.pipe_file(artifacts.path(digest), b"the fake model")
    assert artifacts.put(data) == digest
    assert artifacts.get(digest) == data


@pytest.mark.parametrize(
    "digest",
    [
        "../../etc/passwd",
        "a/b",
        "ab" * 31 + "/x",
        "AB" * 32,
        "ab" * 31,
        "ab" * 33,
        "ab" * 31 + "a\x00",
        "",
        "..",
        7,
    ],
)
def test_a_digest_that_is_not_64_hex_characters_is_refused(artifacts: ArtifactStore, digest: object) -> None:
    for call in (artifacts.get, artifacts.exists, artifacts.path, artifacts.verify):
        with pytest.raises(UsageError, match="64 lowercase hex"):
            call(digest)  # type: ignore[arg-type]


def test_the_registry_hands_out_nothing_from_a_corrupted_artifact(store: Store, tmp_path: Path) -> None:
    """A tampered model file that still parses is refused before any format sees it."""
    fmt = get_format("json")
    digest = store.artifacts.put(fmt.dumps({"threshold": 0.5}))
    mv = store.registry.register("m", digest, framework="json", actor="t")
    assert fmt.loads(store.registry.load_artifact(mv)) == {"threshold": 0.5}

    store.artifacts.fs.pipe_file(store.artifacts.path(digest), fmt.dumps({"threshold": 0.0}))
    with pytest.raises(IntegrityError, match="refusing to load"):
        store.registry.load_artifact(mv)


def test_registering_an_artifact_that_was_never_stored_is_refused(store: Store) -> None:
    with pytest.raises(NotFoundError, match="not in the artifact store"):
        store.registry.register("m", "cd" * 32, framework="json", actor="t")
    with pytest.raises(UsageError):
        store.registry.register("m", "../../outside", framework="json", actor="t")
    assert store.registry.list_models() == []
    assert store.audit.entries() == []
