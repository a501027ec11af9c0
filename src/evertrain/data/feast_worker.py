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
"""

import json
import sys
from pathlib import Path


def main() -> int:
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


if __name__ == "__main__":
    sys.exit(main())
