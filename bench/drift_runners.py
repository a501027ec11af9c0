"""One drift computation per process, for bench/drift.py.

Run as ``python drift_runners.py TOOL REFERENCE CURRENT OUT.json [PROFILE]`` inside the
tool's own virtual environment. Loading the Parquet files is not timed; the drift
computation is, ``repeats`` times for the fast tools (the median is reported). Only
the standard library is imported at the top, since each tool's environment has its
own packages and none but evertrain's has evertrain.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

DRIFT_ALPHA = 0.05


#: CPU seconds (all threads) of each timed repeat, next to the wall-clock times: on a
#: machine shared with other work, wall-clock time measures the neighbours too.
CPU_TIMES: list[float] = []


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        CPU_TIMES.append(time.process_time() - c0)
    return times, result


def _pandas(path: str) -> Any:
    import pyarrow.parquet as pq

    df = pq.read_table(path).to_pandas()
    for c in df.columns:
        if str(df[c].dtype) == "category":
            df[c] = df[c].astype(str).astype(object)
    return df


def _split(df: Any) -> tuple[list[str], list[str]]:
    cat = [c for c in df.columns if df[c].dtype == object]
    num = [c for c in df.columns if c not in cat]
    return num, cat


def run_evertrain(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    import evertrain
    from evertrain.data.tables import read_table

    ref, cur = read_table(ref_path), read_table(cur_path)
    times, report = _timed(lambda: evertrain.drift(ref, cur), 3)
    return {"times": times, "flagged": report.drifted_columns, "exact": report.exact}


def run_evertrain_profile_build(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    from evertrain.data.tables import read_table
    from evertrain.monitor.profiles import Profile

    ref = read_table(ref_path)
    times, prof = _timed(lambda: Profile.from_table(ref), 3)
    if profile_path:
        prof.save(profile_path)
    return {"times": times, "flagged": [], "note": "reference profile with KLL sketches, saved once"}


def run_evertrain_with_profile(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    import evertrain
    from evertrain.data.tables import read_table
    from evertrain.monitor.profiles import Profile

    if not profile_path:
        raise SystemExit("evertrain-with-profile needs the saved profile path")
    t0 = time.perf_counter()
    prof = Profile.load(profile_path)
    load = time.perf_counter() - t0
    cur = read_table(cur_path)
    times, report = _timed(lambda: evertrain.drift(prof, cur), 3)
    return {"times": times, "flagged": report.drifted_columns, "profile_load_s": load}


def run_numpy(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for path in (ref_path, cur_path):
        t = pq.read_table(path)
        for name in t.column_names:
            if pa.types.is_floating(t.schema.field(name).type):
                arrays.append(np.ascontiguousarray(t.column(name).to_numpy()))

    def one_pass() -> float:
        return float(sum(float(a.sum()) for a in arrays))

    times, _ = _timed(one_pass, 5)
    return {"times": times, "flagged": [], "note": f"sum of {len(arrays)} float64 columns (both sets)"}


def run_evidently(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = _pandas(ref_path), _pandas(cur_path)
    num, cat = _split(ref)
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)

    def go() -> Any:
        report = Report([DataDriftPreset()])
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        return snapshot.dict()

    times, d = _timed(go, 1)
    flagged, methods = [], {}
    for m in d.get("metrics", []):
        config = m.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        column, method = config["column"], str(config.get("method", ""))
        threshold, value = float(config["threshold"]), float(m["value"])
        # Distances drift at or above the threshold, p-values below it.
        pvalue_like = "p_value" in method.lower() or "test" in method.lower()
        drifted = value < threshold if pvalue_like else value >= threshold
        methods[column] = method
        if drifted:
            flagged.append(column)
    return {"times": times, "flagged": flagged, "methods": sorted(set(methods.values()))}


def run_nannyml(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    import nannyml as nml

    ref, cur = _pandas(ref_path), _pandas(cur_path)
    num, cat = _split(ref)

    def go() -> Any:
        calc = nml.UnivariateDriftCalculator(column_names=num + cat, treat_as_categorical=cat)
        calc.fit(ref)
        return calc.calculate(cur).filter(period="analysis").to_df()

    times, df = _timed(go, 1)
    flagged = sorted({col[0] for col in df.columns if col[-1] == "alert" and bool(df[col].any())})
    return {"times": times, "flagged": flagged, "note": "default methods and chunking"}


def run_alibi(ref_path: str, cur_path: str, profile_path: str | None) -> dict[str, Any]:
    import numpy as np
    from alibi_detect.cd import TabularDrift

    ref, cur = _pandas(ref_path), _pandas(cur_path)
    num, cat = _split(ref)
    names = num + cat
    x_ref = np.empty((len(ref), len(names)), dtype=np.float64)
    x_cur = np.empty((len(cur), len(names)), dtype=np.float64)
    categories: dict[int, int] = {}
    for j, c in enumerate(names):
        if c in cat:
            labels = sorted(set(ref[c].unique()) | set(cur[c].unique()))
            code = {v: i for i, v in enumerate(labels)}
            x_ref[:, j] = ref[c].map(code).to_numpy()
            x_cur[:, j] = cur[c].map(code).to_numpy()
            categories[j] = len(labels)
        else:
            x_ref[:, j] = ref[c].to_numpy(dtype=np.float64)
            x_cur[:, j] = cur[c].to_numpy(dtype=np.float64)

    def go() -> Any:
        cd = TabularDrift(x_ref, p_val=DRIFT_ALPHA, categories_per_feature=categories)
        return cd.predict(x_cur, drift_type="feature")

    times, pred = _timed(go, 1)
    is_drift = np.asarray(pred["data"]["is_drift"]).ravel()
    flagged = [names[j] for j in range(len(names)) if bool(is_drift[j])]
    return {"times": times, "flagged": flagged, "note": "KS + chi-square, Bonferroni at 0.05"}


RUNNERS: dict[str, Callable[[str, str, str | None], dict[str, Any]]] = {
    "evertrain": run_evertrain,
    "evertrain-profile-build": run_evertrain_profile_build,
    "evertrain-with-profile": run_evertrain_with_profile,
    "numpy": run_numpy,
    "evidently": run_evidently,
    "nannyml": run_nannyml,
    "alibi-detect": run_alibi,
}


def main() -> None:
    tool, ref_path, cur_path, out = sys.argv[1:5]
    profile_path = sys.argv[5] if len(sys.argv) > 5 else None
    result = RUNNERS[tool](ref_path, cur_path, profile_path)
    result["median_s"] = statistics.median(result["times"])
    result["cpu_times"] = CPU_TIMES
    result["median_cpu_s"] = statistics.median(CPU_TIMES)
    result["load_average_at_end"] = os.getloadavg()[0]
    with open(out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
