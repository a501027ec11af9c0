"""``evertrain drift`` and ``evertrain validate`` through the real command line.

Bad input gives exit 2 and a one-line reason on stderr, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from evertrain.faces.cli import main
from evertrain.monitor.scenario import DRIFTED, make_scenario


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "ref": tmp_path / "reference.parquet",
        "cur": tmp_path / "current.parquet",
        "same": tmp_path / "same.parquet",
    }
    pq.write_table(make_scenario(4_000, seed=1, drifted=False), paths["ref"])
    pq.write_table(make_scenario(4_000, seed=2, drifted=True), paths["cur"])
    pq.write_table(make_scenario(4_000, seed=3, drifted=False), paths["same"])
    rng = np.random.default_rng(0)
    small = pa.table({"age": rng.normal(40, 10, 300).round(1), "plan": rng.choice(["a", "b"], 300)})
    paths["ref_csv"] = tmp_path / "reference.csv"
    pacsv.write_csv(small, paths["ref_csv"])
    return paths


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_drift_exit_codes_and_outputs(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code, out, _ = _run(
        ["drift", str(files["ref"]), str(files["cur"]), "--json", str(out_json), "--html", str(out_html)],
        capsys,
    )
    assert code == 1
    assert "dataset drift" in out
    report = json.loads(out_json.read_text())
    assert sorted(report["drifted_columns"]) == sorted(DRIFTED)
    assert out_html.read_text().startswith("<!doctype html>")
    code, out, _ = _run(["drift", str(files["ref"]), str(files["same"]), "--json", "-"], capsys)
    assert code == 0
    assert json.loads(out)["dataset_drift"] is False


def _assert_clean_failure(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line, err
    for needle in needles:
        assert needle in line, err


def test_bad_input_gives_exit_2_with_a_reason(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    ref_csv = str(files["ref_csv"])
    cases: list[tuple[str, str, tuple[str, ...]]] = []

    missing_col = tmp_path / "no_plan.csv"
    missing_col.write_text("age\n41.0\n39.5\n")
    cases.append((ref_csv, str(missing_col), ("no column named 'plan'",)))

    changed = tmp_path / "changed.csv"
    changed.write_text("age,plan\nn/a,a\n39.5,b\nunknown,a\n")
    cases.append((ref_csv, str(changed), ("column 'age'", "expected numeric", "'n/a'")))

    empty = tmp_path / "empty.csv"
    empty.write_text("age,plan\n")
    cases.append((ref_csv, str(empty), ("no rows",)))

    all_nan = tmp_path / "all_nan.csv"
    all_nan.write_text("age,plan\nNaN,a\nNaN,b\n")
    cases.append((ref_csv, str(all_nan), ("column 'age'", "all 2 values are missing")))

    broken = tmp_path / "broken.csv"
    broken.write_text("age,plan\n41.0,a\n39.5,b,extra\n40.0,a\n")
    cases.append((ref_csv, str(broken), ("line 3", "3 fields", "header has 2")))

    as_json = tmp_path / "data.json"
    as_json.write_text('{"age": [1, 2]}')
    cases.append((ref_csv, str(as_json), ("not a table", "JSON")))

    cases.append((ref_csv, str(tmp_path / "absent.parquet"), ("no such file",)))

    for reference, current, needles in cases:
        code, _, err = _run(["drift", reference, current], capsys)
        _assert_clean_failure(code, err, *needles)


def test_validate(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    schema = tmp_path / "schema.json"
    code, _, _ = _run(
        ["validate", str(files["same"]), "--reference", str(files["ref"]), "--write-schema", str(schema)],
        capsys,
    )
    assert code == 0
    code, _, _ = _run(["validate", str(files["same"]), "--schema", str(schema)], capsys)
    assert code == 0
    report_path = tmp_path / "v.json"
    code, _, _ = _run(
        ["validate", str(files["cur"]), "--schema", str(schema), "--json", str(report_path)], capsys
    )
    assert code == 1
    report = json.loads(report_path.read_text())
    assert not report["ok"]
    new_category = [v for v in report["violations"] if v["rule"] == "category"]
    assert new_category[0]["column"] == "cat_new_5pct" and new_category[0]["examples"] == ["epsilon"]
    code, _, err = _run(["validate", str(files["cur"])], capsys)
    _assert_clean_failure(code, err, "exactly one of --reference")
    bad_schema = tmp_path / "bad.json"
    bad_schema.write_text("[1, 2]")
    code, _, err = _run(["validate", str(files["cur"]), "--schema", str(bad_schema)], capsys)
    _assert_clean_failure(code, err, "not an evertrain schema")


def test_target_drift_is_reported_apart_and_fails_the_check(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    pacsv.write_csv(pa.table({"x": rng.normal(size=3000), "y": rng.integers(0, 2, 3000)}), tmp_path / "r.csv")
    pacsv.write_csv(
        pa.table({"x": rng.normal(size=3000), "y": (rng.random(3000) < 0.7).astype(int)}), tmp_path / "c.csv"
    )
    code, out, _ = _run(
        ["drift", str(tmp_path / "r.csv"), str(tmp_path / "c.csv"), "--target", "y", "--json", "-"], capsys
    )
    report = json.loads(out)
    assert code == 1
    assert report["dataset_drift"] is False and report["drifted_columns"] == []
    assert report["target"]["name"] == "y" and report["target"]["drifted"] is True


def test_saved_reference_profile_gives_the_same_report(
    files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """--save-profile, then the profile as REFERENCE: the same verdicts, exact path or profiled."""
    big_ref, big_cur = tmp_path / "big_ref.parquet", tmp_path / "big_cur.parquet"
    pq.write_table(make_scenario(30_000, seed=1, drifted=False), big_ref)
    pq.write_table(make_scenario(30_000, seed=2, drifted=True), big_cur)
    for ref, cur in ((files["ref"], files["cur"]), (big_ref, big_cur)):
        plain, saved, again = tmp_path / "plain.json", tmp_path / "saved.json", tmp_path / "again.json"
        profile = tmp_path / f"{ref.stem}.profile.json"
        assert _run(["drift", str(ref), str(cur), "--json", str(plain)], capsys)[0] == 1
        code, _, _ = _run(
            ["drift", str(ref), str(cur), "--json", str(saved), "--save-profile", str(profile)], capsys
        )
        assert code == 1
        assert json.loads(saved.read_text()) == json.loads(plain.read_text())
        assert _run(["drift", str(profile), str(cur), "--json", str(again)], capsys)[0] == 1
        report = json.loads(again.read_text())
        assert sorted(report["drifted_columns"]) == sorted(DRIFTED)
        if ref == big_ref:  # large data is compared through the reference profile either way
            assert report["columns"] == json.loads(plain.read_text())["columns"]


def test_bad_reference_profile_gives_exit_2(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"format": "something else"}')
    code, _, err = _run(["drift", str(bogus), str(files["cur"])], capsys)
    assert code == 2 and "not an evertrain profile" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["drift", str(tmp_path / "absent.json"), str(files["cur"])], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = _run(
        ["drift", str(bogus), str(files["cur"]), "--save-profile", str(tmp_path / "p.json")], capsys
    )
    assert code == 2 and "--save-profile needs a table" in err
