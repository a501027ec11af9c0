"""The project file: defaults, durations, and errors that name the file, line and field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evertrain.exceptions import SpecError
from evertrain.spec import (
    Spec,
    _known_trainer_params,
    dump_spec,
    json_schema,
    load_spec,
    parse_duration,
    parse_spec,
)

MINIMAL = """\
model:
  name: churn
  target: label
data:
  source: {kind: csv, path: data.csv}
"""


def test_minimal_spec_gets_documented_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.model.name == "churn"
    assert spec.training.window.kind == "sliding"
    assert spec.policy.cooldown == 6 * 3600.0
    assert [s.share for s in spec.rollout.steps] == [0.1, 0.5]
    # a project that names no gates must beat its champion; one that says [] needs none
    assert [(g.kind, g.metric, g.margin) for g in spec.gates] == [("auto", "accuracy", 0.01)]
    assert parse_spec(MINIMAL + "gates: []\n").gates == []
    regression = parse_spec(MINIMAL.replace("target: label", "target: label\n  task: regression"))
    assert [g.metric for g in regression.gates] == ["rmse"]


def test_the_default_trainer_is_boosting_on_a_bounded_window() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.model.trainer.kind == "lightgbm"
    assert (spec.training.window.kind, spec.training.window.rows) == ("sliding", 5_000)
    # A window that names its own bound, or none at all, keeps it.
    window = "training:\n  window: {kind: sliding, %s}\n"
    assert parse_spec(MINIMAL + window % "duration: 7d").training.window.rows is None
    assert parse_spec(MINIMAL + window % "rows: null").training.window.rows is None
    assert parse_spec(MINIMAL + window % "rows: 800").training.window.rows == 800
    assert parse_spec(MINIMAL + "training: {window: {kind: expanding}}\n").training.window.rows is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("1.5h", 5400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        (30, 30.0),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["3 parsecs", "-5s", True, None, "h"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_errors_name_file_line_and_field() -> None:
    text = MINIMAL + "policy:\n  cooldown: soon\ngates:\n  - kind: threshold\n    metric: accuracy\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="evertrain.yaml")
    message = str(info.value)
    assert "evertrain.yaml:7: field 'policy.cooldown'" in message
    assert "evertrain.yaml:9" in message and "needs 'min' or 'max'" in message


def test_unknown_fields_and_bad_names_are_refused() -> None:
    with pytest.raises(SpecError, match=r"evertrain.yaml:4: field 'model.colour': unknown key"):
        parse_spec(MINIMAL.replace("target: label", "target: label\n  colour: blue"))
    with pytest.raises(SpecError, match=r"model\.name"):
        parse_spec(MINIMAL.replace("name: churn", "name: ../etc"))


def test_broken_yaml_names_the_line() -> None:
    with pytest.raises(SpecError, match=r"evertrain.yaml:\d+: not valid YAML"):
        parse_spec("model: [unclosed\n", source="evertrain.yaml")


def test_canary_shares_must_increase() -> None:
    text = MINIMAL + "rollout:\n  steps:\n    - {share: 0.5}\n    - {share: 0.1}\n"
    with pytest.raises(SpecError, match=r"rollout\.steps"):
        parse_spec(text)


def test_round_trip_and_load(tmp_path: Path) -> None:
    spec = parse_spec(MINIMAL)
    (tmp_path / "evertrain.yaml").write_text(dump_spec(spec))
    assert load_spec(tmp_path) == spec
    with pytest.raises(SpecError, match=r"no evertrain\.yaml here"):
        load_spec(tmp_path / "elsewhere")


def test_json_schema_is_published_and_current() -> None:
    schema = json_schema()
    assert schema["title"].startswith("evertrain project file")
    assert {"model", "data"} <= set(schema["required"])
    published = Path(__file__).resolve().parents[1] / "docs" / "evertrain.schema.json"
    assert json.loads(published.read_text()) == schema, (
        "run: evertrain spec schema > docs/evertrain.schema.json"
    )
    assert Spec.model_json_schema()["properties"].keys() == schema["properties"].keys()


@pytest.mark.parametrize(
    "cron", ["0 3 * * MON", "@daily", "@hourly", "0 0 13 * FRI", "*/15 0-6 * JAN-MAR 1-5"]
)
def test_cron_with_names_and_macros_is_read(cron: str) -> None:
    spec = parse_spec(MINIMAL + f"triggers:\n  schedule:\n    cron: '{cron}'\n")
    assert spec.triggers.schedule.cron == cron


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 3 * * MUN", "is not valid"),
        ("61 * * * *", "out of range"),
        ("0 3 * *", "has 4 fields"),
        ("* * * * * *", "has 6 fields"),
        ("@reboot", "not a known macro"),
        ("0 0 30 2 *", "would never fire"),
    ],
)
def test_bad_cron_is_refused_when_the_spec_is_read(cron: str, why: str) -> None:
    text = MINIMAL + f"triggers:\n  schedule:\n    cron: '{cron}'\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="evertrain.yaml")
    message = str(info.value)
    assert "evertrain.yaml:8: field 'triggers.schedule.cron'" in message
    assert repr(cron) in message and why in message


def test_unknown_keys_get_a_did_you_mean() -> None:
    text = (
        "model: {name: churn, target: label}\n"
        "data:\n  source: {kind: csv, path: d.csv}\n  time_colum: ts\n"
        "gates:\n  - {kind: threshold, metric: accuracy, mni: 0.6}\n"
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    message = str(caught.value)
    assert "evertrain.yaml:4: field 'data.time_colum': unknown key (did you mean 'time_column'?)" in message
    assert "field 'gates[0].threshold.mni': unknown key (did you mean 'min'?)" in message


@pytest.mark.parametrize(
    ("trainer", "bad", "hint"),
    [
        ("{kind: lightgbm, params: {num_leavs: 15}}", "'num_leavs'", "did you mean"),
        (
            "{kind: sklearn, estimator: sklearn.linear_model.LogisticRegression, params: {max_iters: 10}}",
            "'max_iters'",
            "did you mean 'max_iter'?",
        ),
    ],
)
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_unknown_trainer_parameters_are_refused(
    trainer: str, bad: str, hint: str, cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVERTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    if cache == "warm":  # the names come from the cache file a first reading wrote
        parse_spec(
            "model: {name: churn, target: label, trainer: "
            + trainer.replace("num_leavs", "num_leaves").replace("max_iters", "max_iter")
            + "}\ndata: {source: {kind: csv, path: d.csv}}\n"
        )
        assert len(list((tmp_path / "cache").glob("trainer-params-*.json"))) == 1
    text = (
        f"model: {{name: churn, target: label, trainer: {trainer}}}\n"
        "data: {source: {kind: csv, path: d.csv}}\n"
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    assert (
        "field 'model.trainer'" in str(caught.value)
        and bad in str(caught.value)
        and hint in str(caught.value)
    )
    good = trainer.replace("num_leavs", "num_leaves").replace("max_iters", "max_iter")
    parse_spec(text.replace(trainer, good))


def test_dvc_and_feast_sources_are_read() -> None:
    dvc = parse_spec(
        MINIMAL.replace("{kind: csv, path: data.csv}", "{kind: dvc, path: data/rows.csv, rev: v2}")
    )
    assert (dvc.data.source.kind, dvc.data.source.rev, dvc.data.source.repo) == ("dvc", "v2", None)
    feast = parse_spec(
        MINIMAL.replace(
            "{kind: csv, path: data.csv}",
            "{kind: feast, repo: features, features: ['stats:spend'], entities: {kind: csv, path: data.csv}}",
        )
    )
    assert feast.data.source.entities is not None and feast.data.source.entities.kind == "csv"


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("{kind: dvc}", "a dvc source needs 'path'"),
        ("{kind: csv, path: d.csv, rev: v1}", "'rev' belongs to a dvc source"),
        ("{kind: csv, path: d.csv, features: ['a:b']}", "'features' belongs to a feast source"),
        ("{kind: feast, repo: f, features: ['a:b']}", "needs 'repo', 'features' and 'entities'"),
        ("{kind: feast, repo: f, features: [spend], entities: {kind: csv, path: d.csv}}", "'view:feature'"),
    ],
)
def test_bad_dvc_and_feast_sources_are_named(source: str, why: str) -> None:
    with pytest.raises(SpecError, match=why):
        parse_spec(MINIMAL.replace("{kind: csv, path: data.csv}", source), source="evertrain.yaml")


def test_a_project_with_trainer_params_is_read_without_importing_the_trainer_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parameter names LightGBM accepts are cached per version: reading a project file (every
    command does) does not import LightGBM or scikit-learn once they are known."""
    (tmp_path / "evertrain.yaml").write_text(
        "model: {name: churn, target: label, trainer: {kind: lightgbm, params: {num_leaves: 15}}}\n"
        "data: {source: {kind: csv, path: d.csv}}\n"
    )
    code = (
        "import sys; from evertrain.spec import load_spec; load_spec('evertrain.yaml'); "
        "print(sorted(m for m in ('lightgbm', 'sklearn') if m in sys.modules))"
    )
    env = {**os.environ, "EVERTRAIN_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert [r.stdout.strip() for r in runs] == ["['lightgbm', 'sklearn']", "[]"], [r.stderr for r in runs]
    # an estimator from outside scikit-learn is read from its class every time (it may change
    # under the same name): nothing of it is cached
    monkeypatch.setenv("EVERTRAIN_CACHE_DIR", str(tmp_path / "other"))
    assert "prog" in (_known_trainer_params("sklearn", "argparse.ArgumentParser") or set())
    assert not (tmp_path / "other").exists()
