"""What a team's own Feast code does around evertrain, run in Feast's venv by the Feast tests.

python _feast_side.py online REPO REGIONS_JSON     -> the online features of each region (JSON)
python _feast_side.py write REPO ROWS.parquet       -> rows written to the online store, as a
                                                       streaming job would (region_stats)
"""

from __future__ import annotations

import json
import sys

import pandas as pd
from feast import FeatureStore

FEATURES = ["region_stats:outage_hours", "region_stats:promo"]


def main() -> None:
    command, repo = sys.argv[1], sys.argv[2]
    store = FeatureStore(repo_path=repo)
    if command == "online":
        rows = [{"region": r} for r in json.loads(sys.argv[3])]
        print(json.dumps(store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()))
    elif command == "write":
        store.write_to_online_store("region_stats", pd.read_parquet(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
