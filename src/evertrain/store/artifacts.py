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
from typing import TYPE_CHECKING

from evertrain.exceptions import IntegrityError, NotFoundError, StoreError, UsageError
from evertrain.store.storage import local_path, open_fs, storage_errors

if TYPE_CHECKING:
    import fsspec

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
    """Blobs addressed by sha256 under any fsspec URL (a local folder by default).

    A local folder is read and written with plain file calls (no fsspec to import: a
    promotion reads one blob and should start fast). Any other URL's filesystem is opened
    on first use, with the storage options configured by then (``storage.options`` of the
    project file, ``EVERTRAIN_STORAGE_OPTIONS``). Any storage client's failure is a
    :class:`StoreError` naming the URL and the cause.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root: str | None = None
        #: The folder of a store on the local disk (None for any other URL).
        self._local_root = local_path(url)

    def _open(self) -> tuple[fsspec.AbstractFileSystem, str]:
        if self._fs is None or self._root is None:
            fs, root = open_fs(self.url)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs, self._root

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._open()[0]

    @property
    def root(self) -> str:
        if self._local_root is not None:
            return self._local_root
        return self._open()[1]

    @property
    def _local(self) -> bool:
        return self._local_root is not None

    def path(self, digest: str) -> str:
        check_digest(digest)
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:]}"

    def exists(self, digest: str) -> bool:
        path = self.path(digest)
        if self._local:
            return os.path.isfile(path)
        with storage_errors(self.url, f"look for artifact {digest[:12]}"):
            return bool(self.fs.exists(path))

    def size(self, digest: str) -> int:
        """The stored size of ``digest`` in bytes (its content is checked when it is read, not here)."""
        path = self.path(digest)
        try:
            with storage_errors(self.url, f"read the size of artifact {digest[:12]}"):
                if self._local:
                    return os.stat(path).st_size
                return int(self.fs.size(path))
        except (FileNotFoundError, NotFoundError):
            raise NotFoundError(f"artifact {digest} is not in the artifact store at {self.url}") from None

    def put(self, data: bytes, *, digest: str | None = None) -> str:
        """Store ``data`` and return its sha256.

        Storing the same bytes twice is a no-op while the stored copy is intact; a copy that
        no longer hashes to its name (damaged on disk) is replaced by these good bytes.
        ``digest``: the sha256 of these very bytes, when the caller has just computed it
        (a base model's files are hashed for its manifest), so a large blob is not hashed
        twice; reading an artifact checks its hash whatever was said here.
        """
        digest = sha256_bytes(data) if digest is None else check_digest(digest)
        final = self.path(digest)
        with storage_errors(self.url, f"write artifact {digest[:12]}"):
            if self._stored_hash(final) == digest:
                return digest
        try:
            if self._local:
                self._put_local(f"{self.root}/tmp/{uuid.uuid4().hex}", final, data)
            else:
                # An object store's put is atomic: a reader sees the whole object or none.
                with storage_errors(self.url, f"write artifact {digest[:12]}"):
                    self.fs.pipe_file(final, data)
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
            with storage_errors(self.url, f"read artifact {digest[:12]}"):
                data = Path(path).read_bytes() if self._local else self.fs.cat_file(path)
        except (FileNotFoundError, NotFoundError):
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
