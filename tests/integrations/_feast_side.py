"""What a team's own Feast code does around evertrain, run in Feast's venv by the Feast tests (one
process: importing Feast takes seconds of CPU).

    python _feast_side.py REPO START END

Materializes the repo's features of START..END (epoch seconds) into the online store, reads each
region's online features as serving would, then plays a streaming job with a bug (it writes
outage_hours in minutes) and reads them again. Its last line is {"before": ..., "after": ...}.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import pandas as pd
from feast import FeatureStore

FEATURES = ["region_stats:outage_hours", "region_stats:promo"]
REGIONS = ["east", "north", "south", "west"]


def main() -> None:
    repo, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    store = FeatureStore(repo_path=repo)
    store.materialize(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
    rows = [{"region": r} for r in REGIONS]
    before = store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    bad = pd.DataFrame(
        {
            "region": before["region"],
            "event_timestamp": pd.Timestamp.now(tz="UTC"),
            "outage_hours": [v * 60.0 for v in before["outage_hours"]],
            "promo": before["promo"],
        }
    )
    store.write_to_online_store("region_stats", bad)
    after = store.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    print(json.dumps({"before": before, "after": after}))


if __name__ == "__main__":
    main()
