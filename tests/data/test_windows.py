"""Training windows: point-in-time correctness, window kinds, holdout and valid parts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from evertrain.data.examples import make_churn_stream
from evertrain.data.windows import WEIGHT_COLUMN, known_at, make_window, resolve_columns
from evertrain.exceptions import DataValidationError, SpecError
from evertrain.spec import Spec


def _spec(**training: Any) -> Spec:
    data: dict[str, Any] = training.pop("data", {})
    return Spec.model_validate(
        {
            "model": {"name": "m", "target": "y"},
            "data": {"source": {"kind": "csv", "path": "x.csv"}, "time_column": "t", **data},
            "training": training,
        }
    )


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"t": np.arange(n, dtype=float), "x": np.arange(n) * 2.0, "y": np.arange(n) % 2})


def _parts(window: Any) -> pd.DataFrame:
    return pd.concat([window.train, window.valid, window.holdout], ignore_index=True)


def test_no_label_that_arrives_after_the_cutoff_is_used() -> None:
    rows = make_churn_stream(3000, seed=11)
    spec = Spec.model_validate(
        {
            "model": {"name": "churn", "target": "churned"},
            "data": {
                "source": {"kind": "csv", "path": "x.csv"},
                "time_column": "ts",
                "label_time_column": "label_ts",
            },
            "training": {"window": {"kind": "expanding"}},
        }
    )
    cutoff = float(rows["ts"].iloc[2000])
    window = make_window(rows, spec, cutoff)
    used = _parts(window)
    late = rows[rows["label_ts"] > cutoff]
    assert len(late) > 100  # the stream does have labels still in flight at the cut-off
    assert (used["label_ts"] <= cutoff).all()
    assert not set(zip(late["ts"], late["label_ts"], strict=True)) & set(
        zip(used["ts"], used["label_ts"], strict=True)
    )
    assert window.info["n_not_yet_labelled"] == len(rows) - len(used)
    # Moving the cut-off forward lets those labels in.
    later = make_window(rows, spec, float(rows["label_ts"].max()))
    assert len(_parts(later)) == len(rows)


def test_label_delay_when_there_is_no_label_time_column() -> None:
    rows = _rows(100)
    window = make_window(rows, _spec(window={"kind": "expanding"}, data={"label_delay": "10s"}), cutoff=99.0)
    assert _parts(window)["t"].max() == 89.0


def test_an_id_labelled_twice_keeps_the_newest_label_known_at_the_cutoff() -> None:
    rows = pd.DataFrame(
        {
            "t": [1.0, 1.0, 2.0],
            "arrived": [5.0, 9.0, 6.0],
            "id": ["a", "a", "b"],
            "y": [0, 1, 1],
            "x": [0.1, 0.1, 0.2],
        }
    )
    spec = _spec(data={"label_time_column": "arrived", "id_column": "id"})
    columns = resolve_columns(spec, rows)
    assert known_at(rows, columns, 0.0, cutoff=7.0)["y"].tolist() == [0, 1]
    assert known_at(rows, columns, 0.0, cutoff=10.0)["y"].tolist() == [1, 1]


def test_sliding_by_rows_and_by_duration() -> None:
    rows = _rows(100)
    by_rows = make_window(rows, _spec(window={"kind": "sliding", "rows": 40}), cutoff=1000.0)
    assert _parts(by_rows)["t"].tolist() == list(np.arange(60.0, 100.0))
    by_time = make_window(rows, _spec(window={"kind": "sliding", "duration": 30}), cutoff=99.0)
    assert _parts(by_time)["t"].min() == 70.0


def test_expanding_uses_everything_known() -> None:
    window = make_window(_rows(50), _spec(window={"kind": "expanding"}), cutoff=1000.0)
    assert len(_parts(window)) == 50


def test_weighted_window_weights_halve_every_half_life() -> None:
    window = make_window(_rows(100), _spec(window={"kind": "weighted", "half_life": 10}), cutoff=99.0)
    weights = window.train[WEIGHT_COLUMN].to_numpy()
    times = window.train["t"].to_numpy()
    np.testing.assert_allclose(weights, 0.5 ** ((times.max() - times) / 10.0))
    assert weights.max() == 1.0
    assert WEIGHT_COLUMN not in resolve_columns(_spec(), window.train).features


def test_holdout_is_the_newest_slice_and_never_trained_on() -> None:
    spec = _spec(holdout={"fraction": 0.2, "min_rows": 0}, valid_fraction=0.25)
    window = make_window(_rows(100), spec, cutoff=1000.0)
    assert len(window.holdout) == 20 and len(window.valid) == 20 and len(window.train) == 60
    assert (
        window.train["t"].max()
        < window.valid["t"].min()
        <= window.valid["t"].max()
        < window.holdout["t"].min()
    )
    by_time = make_window(_rows(100), _spec(holdout={"duration": 5}), cutoff=1000.0)
    assert by_time.holdout["t"].tolist() == [95.0, 96.0, 97.0, 98.0, 99.0]
    # By default the holdout grows towards holdout.min_rows so that the gate can see a
    # difference, but never past a third of the rows: 33 of 100, the newest.
    raised = make_window(_rows(100), _spec(holdout={"fraction": 0.2}), cutoff=1000.0)
    assert raised.holdout["t"].tolist() == [float(t) for t in range(67, 100)]


def test_timestamps_and_strings_are_times() -> None:
    rows = _rows(10).assign(t=pd.date_range("2026-01-01", periods=10, freq="h").astype(str))
    window = make_window(
        rows, _spec(window={"kind": "expanding"}), cutoff=pd.Timestamp("2026-01-01 04:30Z").timestamp()
    )
    assert len(_parts(window)) == 5


def test_errors_name_the_column_and_the_problem() -> None:
    with pytest.raises(DataValidationError, match="time_column 'nope'"):
        make_window(_rows(10), _spec(data={"time_column": "nope"}), cutoff=100.0)
    with pytest.raises(DataValidationError, match="no training rows"):
        make_window(_rows(10), _spec(), cutoff=-1.0)
    no_time = Spec.model_validate(
        {
            "model": {"name": "m", "target": "y"},
            "data": {"source": {"kind": "csv", "path": "x.csv"}},
            "training": {"window": {"kind": "sliding", "duration": 5}},
        }
    )
    with pytest.raises(SpecError, match=r"needs data\.time_column"):
        make_window(_rows(10), no_time, cutoff=100.0)
