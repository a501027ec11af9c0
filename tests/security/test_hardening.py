"""The smaller holes, each closed: whole-name matching, model file size limits, masked
secrets, an audit chain held against the registry, no disk paths in public answers, and
feedback labels typed while the champion is not loaded."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from servekit import LiveServer, classifier, client, make_store, read_log, register, wait_until

from evertrain.controller.alerts import Alerts
from evertrain.data.sources import SqlSource
from evertrain.exceptions import DataValidationError, InputError, InvalidNameError
from evertrain.serve import create_app
from evertrain.spec import Spec, Webhook
from evertrain.store.formats import LightGBMFormat, SkopsFormat
from evertrain.store.metadata import audit_head, audit_log
from evertrain.store.names import check_alias, check_model_name
from evertrain.store.redact import mask_url
from evertrain.train.inputs import FieldRule


@pytest.mark.parametrize("name", ["churn\n", "churn\r\n", "\nchurn"])
def test_a_name_with_a_newline_is_refused(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_model_name(name)
    with pytest.raises(InvalidNameError):
        check_alias("champion\n")


def test_a_feature_string_with_a_lone_surrogate_is_the_callers_error() -> None:
    rule = FieldRule("color", "categorical", categories=frozenset({"red"}))
    with pytest.raises(InputError, match=r"instances\[0\]\.color: .*not valid Unicode"):
        rule.check(["\ud800"])
    assert rule.check(["\U0001f600"]) == ["\U0001f600"]  # a real character outside the BMP is fine


def test_a_small_skops_file_that_expands_past_the_limit_is_refused_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    model = LinearRegression()
    model.coef_ = np.zeros(4 * 1024 * 1024)  # 32 MiB of zeros: a few kB compressed
    model.intercept_ = 0.0
    data = sio.dumps(model, compression=zipfile.ZIP_DEFLATED)
    assert len(data) < 1024 * 1024
    monkeypatch.setenv("EVERTRAIN_MAX_MODEL_BYTES", str(16 * 1024 * 1024))
    with pytest.raises(DataValidationError, match="more than 16777216 bytes uncompressed"):
        SkopsFormat().loads(data)
    monkeypatch.setenv("EVERTRAIN_MAX_MODEL_BYTES", str(64 * 1024 * 1024))
    assert SkopsFormat().loads(data).coef_.shape == (4 * 1024 * 1024,)


def test_a_zip_member_that_expands_like_a_bomb_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", "{}")
        archive.writestr("a.npy", b"\0" * (80 * 1024 * 1024))
    with pytest.raises(DataValidationError, match="expands"):
        SkopsFormat().loads(buffer.getvalue())


def test_a_lightgbm_file_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVERTRAIN_MAX_MODEL_BYTES", "1024")
    with pytest.raises(DataValidationError, match="larger than the 1024 accepted"):
        LightGBMFormat().loads(b"tree\n" * 1000)


def test_sql_urls_are_masked_in_lineage_and_errors() -> None:
    source = SqlSource(
        "postgresql://app:hunter2@127.0.0.1:1/prod?sslmode=disable&password=hunter3", "select 1"
    )
    assert "hunter" not in source.uri
    assert "app:***@127.0.0.1:1/prod" in source.uri and "password=***" in source.uri
    with pytest.raises(Exception) as failed:
        source.read()
    assert "hunter" not in str(failed.value)


def test_webhook_tokens_stay_out_of_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://127.0.0.1:9/services/T000/B000/sEcReTtOkEn?token=another-secret"
    alerts = Alerts([Webhook(url=url, retries=0)], sleep=lambda _: None)
    with caplog.at_level(logging.DEBUG, logger="evertrain"):
        alerts.emit("promotion", {"model": "m"})
        alerts.flush()
    text = caplog.text
    assert "webhook http://127.0.0.1:9/***" in text
    assert "sEcReTtOkEn" not in text and "another-secret" not in text
    assert mask_url("mysql://root:pw@db/x") == "mysql://root:***@db/x"


def test_a_wiped_audit_chain_is_not_intact(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    try:
        store.registry.promote("m", register(store, "m", classifier(0)), actor="test")
        assert store.audit.verify().ok
        with store.db.write() as conn:
            conn.execute(sa.delete(audit_log))
            conn.execute(sa.delete(audit_head))
        verdict = store.audit.verify()
        assert not verdict.ok
        assert "v1 is registered but the audit chain has no register entry" in str(verdict.problem)
    finally:
        store.close()


def test_an_alias_moved_behind_the_logs_back_is_found(tmp_path: Path) -> None:
    from evertrain.store.metadata import aliases

    store = make_store(tmp_path / "store")
    try:
        first = register(store, "m", classifier(0))
        second = register(store, "m", classifier(1))
        store.registry.promote("m", first, actor="test")
        with store.db.write() as conn:
            conn.execute(sa.update(aliases).values(version=second))
        verdict = store.audit.verify()
        assert not verdict.ok
        assert "alias 'champion' of model 'm' points at v2 in the registry" in str(verdict.problem)
    finally:
        store.close()


def _spec(name: str) -> Spec:
    return Spec.model_validate(
        {"model": {"name": name, "task": "binary", "target": "label"}, "data": {"source": {"kind": "log"}}}
    )


def test_labels_are_typed_and_paths_hidden_while_the_champion_cannot_load(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    version = register(store, "m", classifier(0))
    store.registry.promote("m", version, actor="test")
    # The artifact is damaged on disk: the version cannot load (its hash no longer matches).
    digest = store.registry.get_version("m", version).artifact_sha256
    Path(store.artifacts.path(digest)).write_bytes(b"not the model")
    app = create_app(store, _spec("m"))
    try:
        with LiveServer(app) as live, client(live.url, timeout=10) as http:
            wait_until(
                lambda: app.state.server.manager.load_error("m", version) is not None, 30, "no load error"
            )
            status = http.get("/v1/models/m").json()
            assert status["ready"] is False and status["load_errors"]
            assert str(tmp_path) not in str(status), status["load_errors"]
            # Labels are typed by the task and the snapshot's classes, with no model loaded.
            bad = http.post("/v1/models/m:feedback", json={"labels": [{"request_id": "r1", "label": "yes"}]})
            assert bad.status_code == 422, bad.text
            ok = http.post("/v1/models/m:feedback", json={"labels": [{"request_id": "r1", "label": 1}]})
            assert ok.status_code == 200, ok.text
            assert app.state.server.flush()
        labels = read_log(store, "feedback", "m")
        assert labels["label"].tolist() == [1.0]
    finally:
        store.close()
