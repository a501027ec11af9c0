"""The monitor's acceptance statistics on the generated scenario (20 clean + 5 drifted columns).

    python bench/acceptance.py [--seeds 20] [--reports 100]

* 20 seeds at 1,000,000 rows: all 5 drifted columns flagged and none of the 20 clean
  ones, in every seed.
* 20 seeds at 10,000 rows: at least 95 of the 100 drifted-column cases flagged, at most
  1 false flag in the 400 clean-column cases.
* 100 reports of 25 columns with no drift at all (10,000 rows): at most 1 false flag.

Writes ``bench/.work/acceptance.json`` and prints a Markdown summary. The tests run a
scaled-down version of the same checks (tests/monitor/test_scenario.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evertrain.monitor import drift
from evertrain.monitor.scenario import DRIFTED, make_scenario

WORK = Path(__file__).resolve().parent / ".work"


def drifted_runs(rows: int, seeds: int) -> dict[str, object]:
    truth = set(DRIFTED)
    hits = misses = false = 0
    false_columns: list[str] = []
    every_seed_exact = True
    seconds = []
    for seed in range(seeds):
        ref = make_scenario(rows, seed=10_000 + 2 * seed, drifted=False)
        cur = make_scenario(rows, seed=10_001 + 2 * seed, drifted=True)
        t0 = time.perf_counter()
        flagged = set(drift(ref, cur).drifted_columns)
        seconds.append(time.perf_counter() - t0)
        hits += len(flagged & truth)
        misses += len(truth - flagged)
        false += len(flagged - truth)
        false_columns += sorted(flagged - truth)
        every_seed_exact &= flagged == truth
    return {
        "rows": rows,
        "seeds": seeds,
        "drifted_flagged": hits,
        "drifted_cases": seeds * len(truth),
        "false_flags": false,
        "clean_cases": seeds * (25 - len(truth)),
        "false_columns": false_columns,
        "all_seeds_exactly_right": every_seed_exact,
        "median_drift_seconds": sorted(seconds)[len(seconds) // 2],
    }


def no_drift_runs(rows: int, reports: int) -> dict[str, object]:
    false = reports_with_flag = 0
    for i in range(reports):
        ref = make_scenario(rows, seed=50_000 + 2 * i, drifted=False)
        cur = make_scenario(rows, seed=50_001 + 2 * i, drifted=False)
        flagged = drift(ref, cur).drifted_columns
        false += len(flagged)
        reports_with_flag += bool(flagged)
    return {
        "rows": rows,
        "reports": reports,
        "columns": 25,
        "false_flags": false,
        "reports_with_a_flag": reports_with_flag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=10_000)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    results = {
        "big": drifted_runs(args.big_rows, args.seeds),
        "small": drifted_runs(args.small_rows, args.seeds),
        "no_drift": no_drift_runs(args.small_rows, args.reports),
    }
    (WORK / "acceptance.json").write_text(json.dumps(results, indent=2))
    print("| run | drifted flagged | false flags | target |")
    print("|---|---:|---:|---|")
    for key, target in (("big", "all 100, none false, every seed"), ("small", ">= 95 of 100, <= 1 of 400")):
        r = results[key]
        print(
            f"| {r['seeds']} seeds x {r['rows']:,} rows | {r['drifted_flagged']} of {r['drifted_cases']} | "
            f"{r['false_flags']} of {r['clean_cases']} | {target} |"
        )
    nd = results["no_drift"]
    print(
        f"| {nd['reports']} no-drift reports x {nd['rows']:,} rows | - | {nd['false_flags']} of "
        f"{nd['reports'] * 25} | <= 1 |"
    )


if __name__ == "__main__":
    main()
