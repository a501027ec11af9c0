"""W&B mirroring in offline mode (no network): a cycle's training lands in a real W&B offline run."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from evertrain.faces.cli import main
from evertrain.store import Store

pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install '.[wandb]')")


BLOCK = 32 * 1024  # W&B's transaction log: LevelDB-style records in 32 KiB blocks
HEADER = 7  # ":W&B", magic 0xBEE1, version; each record: crc32c, length, type


def read_offline_run(path: Path) -> dict[str, dict[str, Any]]:
    """The config and summary an offline run wrote to its ``run-*.wandb`` log, parsed with W&B's protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records: list[bytes] = []
    pending = b""
    pos = HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # the rest of a block too small for a header is padding
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + HEADER])
        if length == 0 and kind == 0:
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        pending += chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            records.append(pending)
            pending = b""
    out: dict[str, dict[str, Any]] = {"config": {}, "summary": {}, "run": {}}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"name": record.run.display_name, "project": record.run.project}
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update})
    return out


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "churn"
    assert main(["init", str(folder)]) == 0
    spec = yaml.safe_load((folder / "evertrain.yaml").read_text())
    spec["tracking"] = {"wandb_project": "churn-loop"}
    (folder / "evertrain.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    return folder


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_cycle_is_mirrored_to_an_offline_wandb_run(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["run", "--once", "--json", "--project", str(project)]) == 0
    result = json.loads(capsys.readouterr().out)  # W&B's own output stayed off stdout
    assert result["tracking"]["wandb"] == {"runs_logged": 1}

    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    written = read_offline_run(next(runs[0].glob("run-*.wandb")))
    summary, config = written["summary"], written["config"]
    assert written["run"] == {"name": "churn-v1", "project": "churn-loop"}
    store = Store.for_project(project).open()
    try:
        version = store.registry.get_version("churn", 1)
    finally:
        store.close()
    assert summary["roc_auc"] == pytest.approx(version.metrics["roc_auc"])
    assert summary["gate_passed"] == 1.0
    assert config["version"] == 1 and config["framework"] == "lightgbm"
    assert config["artifact_sha256"] == version.artifact_sha256

    # the next cycle trains nothing: nothing new is logged
    assert main(["run", "--once", "--json", "--project", str(project)]) == 0
    assert json.loads(capsys.readouterr().out)["tracking"]["wandb"] == {"runs_logged": 0}
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    shutil.rmtree(tmp_path / "wandb")
