"""Label-free ROC AUC estimation: evertrain against NannyML's CBPE, on NannyML's own data.

    python bench/estimate.py

NannyML ships a synthetic binary classification set (50,000 reference rows with
labels, 50,000 analysis rows whose labels come separately; covariate shift and an AUC
drop in the second half). In NannyML's environment (created by bench/drift.py's
helper) this script runs CBPE on chunks of 5,000 rows and exports the data; in
evertrain's environment it runs :class:`evertrain.monitor.estimate.PerformanceEstimator`
on the same chunks; then it compares both with the realised AUC per chunk (mean
absolute error). Results go to ``bench/.work/estimate.json`` and standard output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
CHUNK = 5_000

NANNYML_SIDE = r"""
import json, os, sys
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
import nannyml as nml
import pandas as pd
out = sys.argv[1]
reference, analysis, targets = nml.load_synthetic_binary_classification_dataset()
target = "work_home_actual"
key = [c for c in targets.columns if c != target and c in analysis.columns][0]
analysis = analysis.merge(targets, on=key, how="left")
cbpe = nml.CBPE(
    y_pred_proba="y_pred_proba", y_pred="y_pred", y_true=target, metrics=["roc_auc"],
    chunk_size=%(chunk)d, problem_type="classification_binary",
)
cbpe.fit(reference)
df = cbpe.estimate(analysis.drop(columns=[target])).filter(period="analysis").to_df()
col = [c for c in df.columns if c[0] == "roc_auc" and c[-1] == "value"][0]
keep = ["y_pred_proba", "y_pred", target]
reference[keep].to_parquet(os.path.join(out, "nml_reference.parquet"))
analysis[keep].to_parquet(os.path.join(out, "nml_analysis.parquet"))
json.dump({"cbpe_roc_auc": [float(v) for v in df[col]], "version": nml.__version__},
          open(os.path.join(out, "nml_cbpe.json"), "w"))
"""


def main() -> None:
    sys.path.insert(0, str(HERE))
    from drift import environment  # the benchmark environments live in one place

    from evertrain.monitor.estimate import PerformanceEstimator, roc_auc

    WORK.mkdir(exist_ok=True)
    python = environment("nannyml")
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    subprocess.run([str(python), "-c", NANNYML_SIDE % {"chunk": CHUNK}, str(WORK)], check=True, env=env)
    nml = json.loads((WORK / "nml_cbpe.json").read_text())
    ref = pq.read_table(WORK / "nml_reference.parquet")
    ana = pq.read_table(WORK / "nml_analysis.parquet")
    target = "work_home_actual"
    est = PerformanceEstimator().fit(ref.column(target).to_numpy(), ref.column("y_pred_proba").to_numpy())
    scores = ana.column("y_pred_proba").to_numpy()
    preds = ana.column("y_pred").to_numpy()
    labels = ana.column(target).to_numpy()
    chunks = est.estimate_chunks(scores, CHUNK, preds)
    ours = [c["roc_auc"].value for c in chunks]
    realised = [roc_auc(labels[i : i + CHUNK], scores[i : i + CHUNK]) for i in range(0, len(scores), CHUNK)]
    theirs = nml["cbpe_roc_auc"]
    n = min(len(ours), len(theirs), len(realised))
    err_ours = np.abs(np.array(ours[:n]) - np.array(realised[:n]))
    err_theirs = np.abs(np.array(theirs[:n]) - np.array(realised[:n]))
    covered = sum(
        c["roc_auc"].lower <= r <= c["roc_auc"].upper for c, r in zip(chunks[:n], realised[:n], strict=True)
    )
    result = {
        "chunks": n,
        "chunk_size": CHUNK,
        "nannyml_version": nml["version"],
        "realised": realised[:n],
        "evertrain": ours[:n],
        "nannyml_cbpe": theirs[:n],
        "mae_evertrain": float(err_ours.mean()),
        "mae_nannyml_cbpe": float(err_theirs.mean()),
        "evertrain_interval_coverage": covered / n,
    }
    (WORK / "estimate.json").write_text(json.dumps(result, indent=2))
    print("| chunk | realised AUC | evertrain | NannyML CBPE |")
    print("|---:|---:|---:|---:|")
    for i in range(n):
        print(f"| {i} | {realised[i]:.4f} | {ours[i]:.4f} | {theirs[i]:.4f} |")
    print(
        f"\nMAE: evertrain {result['mae_evertrain']:.4f}, NannyML CBPE {result['mae_nannyml_cbpe']:.4f}; "
        f"evertrain 95% interval covered the realised AUC in {covered} of {n} chunks"
    )


if __name__ == "__main__":
    main()
