"""Content-addressed artifact store over fsspec.

Every blob lives at ``<root>/sha256/<aa>/<rest of the hex digest>``. Writes go to a
temporary name and are renamed into place, so a reader never sees half a file; a
crash leaves at most an orphaned temporary. Every read recomputes the sha256 and
refuses a mismatch before the bytes reach a deserializer.

>>> import tempfile
>>> store = ArtifactStore(tempfile.mkdtemp())
>>> digest = store.put(b"hello")
>>> store.get(digest)
b'hello'
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from evertrain.exceptions import IntegrityError, NotFoundError, StoreError, UsageError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise UsageError(f"artifact digest must be 64 lowercase hex characters, got {digest!r}")
    return digest


class ArtifactStore:
    """Blobs addressed by sha256 under any fsspec URL (a local folder by default)."""

    def __init__(self, url: str) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url)
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)

    def path(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:]}"

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self.path(digest)))

    def size(self, digest: str) -> int:
        """The stored size of ``digest`` in bytes (its content is checked when it is read, not here)."""
        path = self.path(digest)
        try:
            if self._local:
                return os.stat(path).st_size
            return int(self.fs.size(path))
        except FileNotFoundError:
            raise NotFoundError(f"artifact {digest} is not in the artifact store at {self.url}") from None

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256.

        Storing the same bytes twice is a no-op while the stored copy is intact; a copy that
        no longer hashes to its name (damaged on disk) is replaced by these good bytes.
        """
        digest = sha256_bytes(data)
        final = self.path(digest)
        if self.fs.exists(final) and self._stored_hash(final) == digest:
            return digest
        tmp = f"{self.root}/tmp/{uuid.uuid4().hex}"
        try:
            if self._local:
                self._put_local(tmp, final, data)
            else:
                self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
                self.fs.pipe_file(tmp, data)
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(tmp, final)
        except OSError as exc:
            raise StoreError(f"cannot write artifact {digest[:12]} under {self.url}: {exc}") from None
        return digest

    def _stored_hash(self, path: str) -> str | None:
        try:
            if self._local:
                return sha256_file(path)
            return sha256_bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def put_file(self, path: str | os.PathLike[str]) -> str:
        with open(path, "rb") as fh:
            return self.put(fh.read())

    @staticmethod
    def _put_local(tmp: str, final: str, data: bytes) -> None:
        Path(tmp).parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(final).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``, after checking that they still hash to it."""
        path = self.path(digest)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise NotFoundError(f"artifact {digest} is not in the artifact store at {self.url}") from None
        actual = sha256_bytes(data)
        if actual != digest:
            raise IntegrityError(
                f"artifact {digest} at {path} is corrupt: its content hashes to {actual}; refusing to load it"
            )
        return bytes(data)

    def verify(self, digest: str) -> bool:
        try:
            self.get(digest)
        except (IntegrityError, NotFoundError):
            return False
        return True
