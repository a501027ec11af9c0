"""Project files kept in the store, so that a replica started with only the store URLs has them.

The controller saves its project file (as canonical JSON bytes) whenever it changes: the
bytes go to the artifact store under their sha256, and a record of kind ``spec`` in the
runs table names the model, the digest and when it was first seen. That digest is the
``spec_sha256`` a training records in each version's lineage, so a version names the
exact settings it was trained under. Parsing the bytes back into a spec is the job of
:mod:`evertrain.spec`, above this part.
"""

from __future__ import annotations

from dataclasses import dataclass

from evertrain.store.artifacts import ArtifactStore, sha256_bytes
from evertrain.store.runs import Run, Runs

SPEC_RUN_KIND = "spec"


@dataclass(frozen=True)
class StoredSpec:
    model: str
    sha256: str
    saved_at: float
    data: bytes


class Specs:
    """Versions of each model's project file, newest last."""

    def __init__(self, runs: Runs, artifacts: ArtifactStore) -> None:
        self.runs = runs
        self.artifacts = artifacts

    def save(self, model: str, data: bytes) -> tuple[str, bool]:
        """Keep ``data`` as ``model``'s current project file; returns its sha256 and whether it is new.

        Saving the bytes that are current already does nothing; saving older bytes again
        makes them current again (a revert is a change too).
        """
        digest = sha256_bytes(data)
        current = self._newest(model)
        if current is not None and current.params.get("sha256") == digest:
            return digest, False
        self.artifacts.put(data)
        number = len(self.runs.list(model=model, kind=SPEC_RUN_KIND)) + 1
        run = self.runs.start(
            SPEC_RUN_KIND,
            model=model,
            key=f"{model}/spec/{number}/{digest}",
            params={"sha256": digest, "number": number},
        )
        self.runs.finish(run.id, "succeeded", result={"sha256": digest})
        return digest, True

    def _newest(self, model: str | None) -> Run | None:
        records = [r for r in self.runs.list(model=model, kind=SPEC_RUN_KIND) if r.status == "succeeded"]
        if not records:
            return None
        return max(records, key=lambda r: (r.created_at, int(r.params.get("number", 0))))

    def current(self, model: str | None = None) -> StoredSpec | None:
        """The newest saved project file of ``model`` (of any model when None), or None."""
        newest = self._newest(model)
        if newest is None:
            return None
        digest = str(newest.params["sha256"])
        return StoredSpec(str(newest.model), digest, newest.created_at, self.artifacts.get(digest))

    def history(self, model: str) -> list[tuple[int, str, float]]:
        """Every saved version of ``model``'s project file: (number, sha256, saved at), oldest first."""
        records = [r for r in self.runs.list(model=model, kind=SPEC_RUN_KIND) if r.status == "succeeded"]
        records.sort(key=lambda r: (r.created_at, int(r.params.get("number", 0))))
        return [(int(r.params.get("number", 0)), str(r.params["sha256"]), r.created_at) for r in records]
