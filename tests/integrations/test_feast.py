"""The ``feast`` source and the skew check, on a local Feast feature repo made here (file offline
store, SQLite online store) and the real Feast in its own venv (Feast pins pandas below ours).

The churn example's regions get two features in Feast, updated every hour: ``outage_hours``
(a value no two hours share, so a row's value names the hour it came from) and ``promo``.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import sys
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from _tools import ROOT, free_port, process, run_tool, tool_env, tool_venv

from evertrain.data import logs
from evertrain.data.feast_source import FeastSource, historical_features
from evertrain.data.sources import CsvSource, open_source
from evertrain.exceptions import DataValidationError, UsageError
from evertrain.faces.cli import main
from evertrain.faces.integrations.feast import mismatch_share
from evertrain.spec import load_spec

SIDE = Path(__file__).with_name("_feast_side.py")
REGIONS = ["east", "north", "south", "west"]
FEATURES = ["region_stats:outage_hours", "region_stats:promo"]
HOUR = 3600.0
pytestmark = pytest.mark.timeout(900)  # a dozen Feast processes: minutes on 2 busy cores

FEATURE_REPO = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

region = Entity(name="region", join_keys=["region"], value_type=ValueType.STRING)
region_stats = FeatureView(
    name="region_stats",
    entities=[region],
    ttl=timedelta(days=1),
    schema=[Field(name="outage_hours", dtype=Float64), Field(name="promo", dtype=Int64)],
    source=FileSource(path={path!r}, timestamp_field="event_timestamp"),
    online=True,
)
"""


def outage(region: int, hour: int) -> float:
    return region * 1000.0 + hour


class _Hook(http.server.BaseHTTPRequestHandler):
    received: typing.ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def hook_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def feast(tmp_path_factory: pytest.TempPathFactory, hook_url: str) -> dict[str, Any]:
    """The churn example moved to the last four days, a feature repo with hourly region features up
    to two hours ago (applied and materialized), and a project whose source is Feast on the log."""
    bin_dir = tool_venv("feast")
    base = tmp_path_factory.mktemp("feast")
    project = base / "churn"
    assert main(["init", str(project)]) == 0
    rows = pd.read_csv(project / "data" / "churn.csv")
    now = time.time()
    start = math.floor((now - 4 * 24 * HOUR) / HOUR) * HOUR
    shift = start - rows["ts"].min()
    rows["ts"] += shift
    rows["label_ts"] += shift
    rows.to_csv(project / "data" / "churn.csv", index=False)
    last_hour = int((now - 2 * HOUR - start) // HOUR)  # the newest feature row: two hours ago
    hours = np.arange(last_hour + 1)
    stats = pd.DataFrame(
        {
            "region": np.repeat(REGIONS, len(hours)),
            "event_timestamp": pd.to_datetime(
                np.tile(start + hours * HOUR, len(REGIONS)), unit="s", utc=True
            ),
            "outage_hours": [outage(r, h) for r in range(len(REGIONS)) for h in hours],
            "promo": np.tile(hours % 3, len(REGIONS)).astype("int64"),
        }
    )
    repo = project / "features"
    repo.mkdir()
    stats.to_parquet(repo / "region_stats.parquet", index=False)
    (repo / "features.py").write_text(FEATURE_REPO.format(path=str(repo / "region_stats.parquet")))
    (repo / "feature_store.yaml").write_text(
        yaml.safe_dump(
            {
                "project": "churn_features",
                "registry": str(repo / "registry.db"),
                "provider": "local",
                "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
                "offline_store": {"type": "file"},
                "entity_key_serialization_version": 3,
            }
        )
    )
    env = {**tool_env(bin_dir), "FEAST_USAGE": "False"}

    def feast_cli(*args: str) -> str:
        done = run_tool([str(bin_dir / "feast"), "-c", str(repo), *args], env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    feast_cli("apply")
    side = run_tool([str(bin_dir / "python"), str(SIDE), str(repo), str(start), str(now - HOUR)], env)
    assert side.returncode == 0, side.stderr[-3000:]
    spec_file = project / "evertrain.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["data"]["source"] = {
        "kind": "feast",
        "repo": "features",
        "features": FEATURES,
        "entities": spec["data"]["source"],  # the labelled log, after the csv history
        "python": str(bin_dir / "python"),
    }
    spec["alerts"] = {"webhooks": [{"url": hook_url, "events": ["skew"], "retries": 0}]}
    spec_file.write_text(yaml.safe_dump(spec))

    return {
        "project": project,
        "repo": repo,
        "python": str(bin_dir / "python"),
        "start": start,
        "last_hour": last_hour,
        "now": now,
        "online": json.loads(side.stdout.strip().splitlines()[-1]),  # after materialize's progress lines
    }


def test_features_are_joined_as_of_each_rows_time(feast: dict[str, Any]) -> None:
    project = feast["project"]
    source = FeastSource(
        str(feast["repo"]),
        FEATURES,
        CsvSource("data/churn.csv", base=project),
        time_column="ts",
        python=feast["python"],
    )
    rows = source.read()
    original = pd.read_csv(project / "data" / "churn.csv")
    assert list(rows.columns) == [*original.columns, "outage_hours", "promo"]
    pd.testing.assert_frame_equal(rows[original.columns], original)  # same rows, same order
    # Each row has the newest hourly value at or before its own time, never a later one.
    hour = ((rows["ts"] - feast["start"]) // HOUR).astype(int).clip(upper=feast["last_hour"])
    region = rows["region"].map(REGIONS.index)
    assert (rows["outage_hours"] == region * 1000.0 + hour).all()
    assert (rows["promo"] == hour % 3).all()
    assert source.uri.startswith(
        f"feast:{feast['repo']}?features=region_stats:outage_hours,region_stats:promo+csv:"
    )
    # a time column named as Feast names its own (event_timestamp) comes back as given
    renamed = original.rename(columns={"ts": "event_timestamp"})
    joined = historical_features(
        renamed,
        repo=str(feast["repo"]),
        features=FEATURES,
        time_column="event_timestamp",
        python=feast["python"],
    )
    pd.testing.assert_frame_equal(joined[renamed.columns], renamed)
    assert (joined["outage_hours"] == rows["outage_hours"]).all()


def test_a_training_reads_its_rows_through_feast(
    feast: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    project = feast["project"]
    assert main(["train", "churn", "--project", str(project)]) == 0
    capsys.readouterr()
    assert main(["lineage", "churn", "1", "--json", "-", "--project", str(project)]) == 0
    lineage = json.loads(capsys.readouterr().out)
    sources = {s for snap in lineage["snapshots"] for s in snap["sources"]}
    assert len(sources) == 1 and next(iter(sources)).startswith(f"feast:{feast['repo']}?features=")
    # The version learned from the Feast features (serving takes them as inputs, as served).
    train = next(snap for snap in lineage["snapshots"] if snap["role"] == "train")
    columns = train["schema"]["columns"]
    assert columns["outage_hours"]["type"] == "numeric" and not columns["outage_hours"]["nullable"]
    assert columns["promo"]["max"] == 2


def serve_rows(
    project: Path, online: dict[str, list[Any]], times: np.ndarray, seed: int, prefix: str
) -> None:
    """Requests answered at ``times`` with the features ``online`` (what the online store gave),
    logged as serving logs them."""
    rng = np.random.default_rng(seed)
    regions = rng.choice(REGIONS, size=len(times))
    by_region = {r: (online["outage_hours"][i], online["promo"][i]) for i, r in enumerate(online["region"])}
    n = len(times)
    columns = {
        "request_id": [f"{prefix}{i}" for i in range(n)],
        "ts": [float(t) for t in times],
        "model_version": [1] * n,
        "arm": ["champion"] * n,
        "latency_ms": [1.0] * n,
        "prediction": [0.0] * n,
        "score": [0.2] * n,
        "region": [str(r) for r in regions],
        "tenure_months": [float(v) for v in rng.uniform(1, 60, n)],
        "outage_hours": [float(by_region[r][0]) for r in regions],
        "promo": [float(by_region[r][1]) for r in regions],
    }
    types = {
        **logs.PREDICTION_COLUMNS,
        "region": "string",
        "tenure_months": "float64",
        "outage_hours": "float64",
        "promo": "float64",
    }
    writer = logs.LogWriter(str(project / ".evertrain" / "logs"))
    writer.offer(logs.PREDICTIONS, "churn", columns, {k: types[k] for k in columns}, n)
    writer.close()


def skew(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["feast", "skew", "--json", "-", "--project", str(project), *args])
    return code, json.loads(capsys.readouterr().out)


def test_served_features_that_match_the_offline_store_show_no_skew_then_a_bad_feed_does(
    feast: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    project, now = feast["project"], feast["now"]
    before = feast["online"]["before"]  # what the online store served: the newest materialized hour
    assert before["outage_hours"] == [outage(REGIONS.index(r), feast["last_hour"]) for r in before["region"]]
    serve_rows(project, before, np.linspace(now - 50 * 60, now - 30 * 60, 150), 1, "a")
    code, report = skew(project, capsys, "--last", "2h")
    assert code == 0, report
    assert report["n_rows"] == 150 and report["skew"] is False
    for name in ("outage_hours", "promo"):
        assert report["columns"][name]["mismatch_share"] == 0.0 and not report["columns"][name]["drifted"]
    assert _Hook.received == []

    # A streaming job began writing outage in minutes to the online store (the side script did,
    # after the first reads): what is served now is no longer what training reads for the same
    # region and time.
    serve_rows(project, feast["online"]["after"], np.linspace(now - 20 * 60, now - 5 * 60, 150), 2, "b")
    code, report = skew(project, capsys, "--last", "2h")
    assert code == 1
    assert report["n_rows"] == 300 and report["skewed_columns"] == ["outage_hours"]
    outage_col = report["columns"]["outage_hours"]
    assert outage_col["drifted"] and outage_col["mismatch_share"] == pytest.approx(0.5)
    assert report["columns"]["promo"]["mismatch_share"] == 0.0
    assert [(a["event"], a["skewed_columns"]) for a in _Hook.received] == [("skew", ["outage_hours"])]


def test_bad_setups_are_named(feast: dict[str, Any]) -> None:
    project = feast["project"]
    entities = CsvSource("data/churn.csv", base=project)
    with pytest.raises(DataValidationError, match="Feature no_such not found in projection region_stats"):
        FeastSource(
            str(feast["repo"]), ["region_stats:no_such"], entities, time_column="ts", python=feast["python"]
        ).read()
    with pytest.raises(UsageError, match="environment with `pip install feast`"):
        FeastSource(
            str(feast["repo"]), FEATURES, entities, time_column="ts", python=shutil.which("python3")
        ).read()
    with pytest.raises(UsageError, match=r"needs data\.time_column"):
        FeastSource(str(feast["repo"]), FEATURES, entities, time_column=None, python=feast["python"]).read()


def test_mismatch_share_counts_rows_that_differ() -> None:
    served = pd.Series([1.0, 2.0, np.nan, 4.0, 5.0])
    assert mismatch_share(served, pd.Series([1.0, 2.0 + 1e-9, np.nan, 4.5, np.nan])) == pytest.approx(0.4)
    assert mismatch_share(pd.Series(["a", "b", None]), pd.Series(["a", "c", None])) == pytest.approx(1 / 3)
    assert mismatch_share(pd.Series([], dtype=float), pd.Series([], dtype=float)) == 0.0


def test_the_skew_check_needs_a_feast_source(tmp_path: Path) -> None:
    project = tmp_path / "churn"
    assert main(["init", str(project)]) == 0
    assert main(["feast", "skew", "--project", str(project)]) == 2  # a log source: nothing to compare


def test_serving_reads_the_features_of_a_requests_entity_keys_from_the_online_store(
    feast: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model that does not take the entity key (region) as an input, served by a real `evertrain
    serve`: requests carry the region and the features computed at request time; the server reads
    the rest from Feast's online store, logs what it served and the region, and the skew check and a
    training on the log both join Feast on the logged region."""
    project = tmp_path / "churn"
    shutil.copytree(feast["project"], project, ignore=shutil.ignore_patterns(".evertrain"))
    spec = yaml.safe_load((project / "evertrain.yaml").read_text())
    spec["model"]["features"] = ["plan", "tenure_months", "monthly_spend", "outage_hours", "promo"]
    spec["gates"] = []
    spec.pop("alerts")
    # the online store serves outage in minutes (the side script's bad stream), far past training's range
    spec["serving"] = {"range_tolerance": None, "log": {"flush_seconds": 0.05}}
    (project / "evertrain.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", "churn", "--project", str(project)]) == 0
    assert main(["promote", "churn", "1", "--project", str(project)]) == 0
    capsys.readouterr()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    args = [sys.executable, "-m", "evertrain", "serve", "--project", str(project), "--port", str(port)]
    after = feast["online"]["after"]
    served = dict(zip(after["region"], zip(after["outage_hours"], after["promo"], strict=True), strict=True))
    request = {"plan": "pro", "tenure_months": 12.0, "monthly_spend": 30.0}
    regions = ["east", "west", "north", "south"] * 10
    with process(args, env, f"{url}/readyz"), httpx.Client(base_url=url, timeout=30) as http:
        status = http.get("/v1/models/churn").json()
        assert "region" not in status["inputs"] and "outage_hours" in status["inputs"]
        ids = []
        for i in range(0, len(regions), 4):
            answer = http.post(
                "/v1/models/churn:predict",
                json={"instances": [{"region": r, **request} for r in regions[i : i + 4]]},
            )
            assert answer.status_code == 200, answer.text
            ids += answer.json()["request_ids"]
        # a value the request carries is used as sent
        promo = (served["east"][1] + 1) % 3
        own = http.post(
            "/v1/models/churn:predict", json={"instances": [{"region": "east", **request, "promo": promo}]}
        )
        assert own.status_code == 200, own.text
        unknown = http.post(
            "/v1/models/churn:predict",
            json={"instances": [{"region": "east", **request}, {"region": "mars"}]},
        )
        assert unknown.status_code == 422
        assert unknown.json()["field"] == "instances[1].region" and "'mars'" in unknown.json()["error"]
        assert "not in Feast's online store" in unknown.json()["error"]
        keyless = http.post("/v1/models/churn:predict", json={"instances": [request]})
        assert keyless.status_code == 422 and keyless.json()["field"] == "instances[0].region"
        assert "missing entity key" in keyless.json()["error"]
        labels = [{"request_id": rid, "label": i % 2} for i, rid in enumerate(ids)]
        assert http.post("/v1/models/churn:feedback", json={"labels": labels}).status_code == 200
        assert http.get("/readyz").status_code == 200  # the 422s took nothing down

    table = logs.read_log(str(project / ".evertrain" / "logs"), logs.PREDICTIONS, "churn").to_pandas()
    assert len(table) == len(regions) + 1
    rows = table.set_index("request_id").loc[ids]
    assert list(rows["region"]) == regions  # logged, though no input of the model
    assert list(rows["outage_hours"]) == [served[r][0] for r in regions]  # what the online store gave
    assert list(rows["promo"]) == [served[r][1] for r in regions]
    assert table.loc[~table["request_id"].isin(ids), "promo"].tolist() == [promo]

    # The skew check joins the offline store on the logged regions at each request's time: the
    # online store's outage (in minutes) differs on every row, its promo only where the client sent it.
    capsys.readouterr()
    assert main(["feast", "skew", "--json", "-", "--last", "1h", "--project", str(project)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["n_rows"] == len(regions) + 1 and report["skewed_columns"] == ["outage_hours"]
    assert report["columns"]["outage_hours"]["mismatch_share"] == 1.0
    assert report["columns"]["promo"]["mismatch_share"] == pytest.approx(1 / (len(regions) + 1))

    # Training reads the labelled served rows with their features from the offline store as of each
    # request's time (the newest hour's values), not the served copies.
    loaded = load_spec(project)
    source = open_source(
        loaded.data.source,
        base=project,
        logs_url=str(project / ".evertrain" / "logs"),
        model="churn",
        target="churned",
        time_column="ts",
    )
    training = source.read().set_index("request_id").loc[ids]
    assert list(training["outage_hours"]) == [outage(REGIONS.index(r), feast["last_hour"]) for r in regions]
    assert list(training["churned"]) == [i % 2 for i in range(len(regions))]
