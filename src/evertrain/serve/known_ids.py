"""Which request ids a model has answered, so feedback for an id nobody answered is reported.

A label whose ``request_id`` matches no prediction can never join one: it is a client's
typo, an id from another model, or a label sent long before its prediction was logged.
The feedback route still keeps it (another replica may have answered the request, its
log rows still queued) but reports it back in ``unknown_request_ids`` and counts it.

An id is known when this replica answered it (the newest :data:`MAX_REMEMBERED` ids are
kept in memory), or when it is in the model's prediction log, which every replica writes.
The log is read only for ids missing from memory, and incrementally: parts from
:data:`LOG_OVERLAP_SECONDS` before the newest row already read, so rows that another
replica flushed late are still found.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from evertrain.data.logs import PREDICTIONS, read_log_parts
from evertrain.exceptions import StoreError

#: Ids kept in memory per replica (about 100 bytes each: some tens of MB at most).
MAX_REMEMBERED = 500_000
#: How far before the newest row already read the next read of the log starts again.
LOG_OVERLAP_SECONDS = 600.0


class KnownIds:
    """The request ids answered for each model: this replica's, then the shared prediction log's."""

    def __init__(self, logs_url: str, *, capacity: int = MAX_REMEMBERED) -> None:
        self.logs_url = logs_url
        self.capacity = capacity
        self._ids: dict[str, OrderedDict[str, None]] = {}
        self._read_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, model: str, ids: Iterable[str]) -> None:
        with self._lock:
            known = self._ids.setdefault(model, OrderedDict())
            for rid in ids:
                known[rid] = None
                known.move_to_end(rid)
            while len(known) > self.capacity:
                known.popitem(last=False)

    def _missing(self, model: str, ids: list[str]) -> list[str]:
        with self._lock:
            known = self._ids.get(model, OrderedDict())
            return [rid for rid in ids if rid not in known]

    def unknown(self, model: str, ids: list[str]) -> list[str]:
        """The ids of ``ids`` that no prediction of ``model`` answered (blocking: file I/O on a miss)."""
        missing = self._missing(model, ids)
        if not missing:
            return []
        since = self._read_until.get(model)
        start = None if since is None else since - LOG_OVERLAP_SECONDS
        try:
            parts = read_log_parts(
                self.logs_url, PREDICTIONS, model, since=start, columns=["request_id", "ts"]
            )
        except (OSError, ValueError, StoreError):
            # The log store is unreachable or the log unreadable: the label is kept all the
            # same (it is spooled like any row), and what memory does not know is reported.
            return missing
        newest = since
        for part in parts:
            if part.num_rows == 0 or "request_id" not in part.column_names:
                continue
            self.add(model, (str(r) for r in part.column("request_id").to_pylist() if r is not None))
            if "ts" in part.column_names:
                top = max((t for t in part.column("ts").to_pylist() if t is not None), default=None)
                if top is not None and (newest is None or top > newest):
                    newest = float(top)
        if newest is not None:
            self._read_until[model] = newest
        return self._missing(model, missing)
