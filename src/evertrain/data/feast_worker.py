"""Feast's point-in-time join, run by the Python of an environment that has Feast.

Feast pins pandas and tenacity below the versions evertrain runs with, so the two never
share an interpreter: :mod:`evertrain.data.feast_source` runs this file as a script with
the interpreter the project names (``data.source.python``), and the two speak through
Parquet files. It imports nothing of evertrain's.

    python feast_worker.py REQUEST.json

REQUEST: ``{"repo": feature repo folder, "features": ["view:feature", ...], "entities":
entity rows (Parquet, with an ``event_timestamp`` column), "out": Parquet to write}``.
The answer is the entity rows with their features as of each row's ``event_timestamp``
(``get_historical_features``). Exit 2 with one line on stderr when Feast refuses the
request (an unknown feature view, a bad repo), 3 when it fails otherwise.

    python feast_worker.py --online CONFIG.json

The online reader serving keeps running (:mod:`evertrain.data.feast_online`). CONFIG:
``{"repo", "features": [...] | null, "feature_service": name | null, "entity_keys": [...] |
null}``. It answers one JSON line per line read on stdin, in order. Its first line
describes what it reads, ``{"keys": {join key: "string"|"int64"|...}, "features": [...]}``
(or ``{"error": ...}``, then it exits); then each request ``{"id", "entities": {key:
[values]}}`` gets ``{"id", "features": {name: [values]}, "missing": [row, ...]}`` (rows
whose entity the online store does not hold) or ``{"id", "error": ...}``. Anything Feast
prints goes to stderr: stdout carries answers only.
"""

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def main() -> int:
    if sys.argv[1] == "--online":
        return online(json.loads(Path(sys.argv[2]).read_text()))
    request = json.loads(Path(sys.argv[1]).read_text())
    try:
        import pandas as pd
        from feast import FeatureStore
        from feast.errors import FeastError
    except ImportError as exc:
        print(f"no feast in {sys.executable}: {exc}", file=sys.stderr)
        return 2
    try:
        store = FeatureStore(repo_path=request["repo"])
        entities = pd.read_parquet(request["entities"])
        job = store.get_historical_features(entity_df=entities, features=list(request["features"]))
        job.to_df().to_parquet(request["out"], index=False)
    except (FeastError, ValueError, LookupError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 3
    return 0


#: Feast's value types as the prediction log stores them; any other key type is logged as text.
KEY_TYPES = {"STRING": "string", "INT64": "int64", "INT32": "int64"}


def _plain(value: Any) -> Any:
    """A feature value as JSON: times as epoch seconds, anything else unknown to JSON as text."""
    if isinstance(value, datetime):
        return value.timestamp()
    return str(value)


def online(config: dict[str, Any]) -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # answers only: whatever Feast prints goes to stderr
    os.dup2(2, 1)

    def say(value: dict[str, Any]) -> None:
        out.write(json.dumps(value, default=_plain) + "\n")

    try:
        from feast import FeatureStore
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        store = FeatureStore(repo_path=config["repo"])
        if config.get("feature_service"):
            wanted: Any = store.get_feature_service(config["feature_service"])
            views = [p.name for p in wanted.feature_view_projections]
            names = [f.name for p in wanted.feature_view_projections for f in p.features]
        else:
            wanted = list(config["features"])
            views = list(dict.fromkeys(ref.split(":")[0] for ref in wanted))
            names = [ref.split(":")[1] for ref in wanted]
        keys: dict[str, str] = {}
        for view in views:
            for entity in store.get_feature_view(view).entities:
                declared = store.get_entity(entity)
                keys[declared.join_key] = KEY_TYPES.get(declared.value_type.name, "string")
        for key in config.get("entity_keys") or ():
            keys.setdefault(key, "string")
        if config.get("entity_keys"):
            keys = {key: keys[key] for key in config["entity_keys"]}
    except Exception as exc:
        say({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
        return 2
    say({"keys": keys, "features": names})
    not_found = FieldStatus.NOT_FOUND
    for line in sys.stdin:
        request = json.loads(line)
        try:
            entities = request["entities"]  # one list per key: Feast takes the columns as they are
            n = len(next(iter(entities.values()), ()))
            answer = store.get_online_features(features=wanted, entity_rows=entities)
            table = answer.to_dict()
            statuses = [list(v.statuses) for v in answer.proto.results]
            ordered = list(answer.proto.metadata.feature_names.val)
            columns = [i for i, name in enumerate(ordered) if name in names]
            missing = [row for row in range(n) if all(statuses[c][row] == not_found for c in columns)]
            say({"id": request["id"], "features": {n: table[n] for n in names}, "missing": missing})
        except Exception as exc:
            say({"id": request.get("id"), "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written: skip the interpreter's teardown, where a native library that Feast
    # loads can abort ("terminate called without an active exception"), turning a clean exit 2
    # with Feast's reason into a crash whose last line hides it.
    os._exit(code)
