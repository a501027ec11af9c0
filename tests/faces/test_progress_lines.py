"""``evertrain train`` and ``evertrain drift`` show their progress on a terminal, and only there.

The terminal is a real pseudo-terminal: rich decides from ``isatty`` like for a person.
Off a terminal (a pipe) and with ``--json`` nothing but the result reaches standard output.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

ENTRY = "import sys; from evertrain.faces.cli import main; sys.exit(main())"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERTRAIN_")}
    env.update(TERM="xterm-256color", COLUMNS="120")
    env.pop("NO_COLOR", None)
    return env


def _on_a_terminal(args: list[str], cwd: Path, timeout: float = 300.0) -> tuple[int, str]:
    """Run ``evertrain ARGS`` with a pseudo-terminal as standard input, output and error."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=_env(),
    )
    os.close(follower)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                raise AssertionError(f"no output for {timeout}s: {bytes(out[-500:])!r}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end closed: the command ended
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        code = proc.wait(timeout=timeout)
    return code, ANSI.sub("", out.decode("utf-8", "replace"))


@pytest.fixture
def churn(tmp_path: Path) -> Path:
    from evertrain.faces.cli import main

    folder = tmp_path / "shop"
    assert main(["init", str(folder)]) == 0
    return folder


def test_train_on_a_terminal_shows_stages_boosting_rounds_and_elapsed_time(churn: Path) -> None:
    code, text = _on_a_terminal(["train", "churn"], churn)
    assert code == 0, text[-2000:]
    assert "training churn: reading the data" in text
    rounds = [int(n) for n in re.findall(r"training churn: boosting round (\d+)/300", text)]
    assert rounds, text[-2000:]
    assert re.search(r"boosting round \d+/300 .*\d:\d\d:\d\d", text)  # the time elapsed beside it
    assert "training churn: checking the gates" in text
    assert "trained churn version 1" in text


def _piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``evertrain ARGS`` with its output going to pipes, as in a script."""
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=300,
        check=False,
    )


def test_off_a_terminal_and_with_json_nothing_but_the_result(churn: Path) -> None:
    done = _piped(["train", "churn", "--json"], churn)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 1  # standard output is the JSON document alone
    done = _piped(["train", "churn"], churn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("trained churn version 2")
    for output in (done.stdout, done.stderr):
        assert "boosting round" not in output and "\x1b" not in output and "\r" not in output


@pytest.fixture
def drifting(tmp_path: Path) -> Path:
    """Two Parquet files of 40,000 rows each (above the exact-comparison size together), x shifted."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    n = 40_000
    for name, shift in (("ref.parquet", 0.0), ("cur.parquet", 0.5)):
        table = {"x": rng.normal(shift, 1, n), "k": rng.integers(0, 5, n), "c": rng.choice(["a", "b"], n)}
        pq.write_table(pa.table(table), tmp_path / name)
    return tmp_path


def test_drift_on_a_terminal_shows_each_side_profiled_column_by_column(drifting: Path) -> None:
    code, text = _on_a_terminal(
        ["drift", "ref.parquet", "cur.parquet", "--save-profile", "ref.json"], drifting
    )
    assert code == 1, text[-2000:]  # x drifted
    assert "drift: cur.parquet vs ref.parquet: profiling ref.parquet 3/3" in text
    assert "drift: cur.parquet vs ref.parquet: profiling cur.parquet 3/3" in text
    assert "drift: cur.parquet vs ref.parquet" in text and "x" in text
    # Against the saved profile only the current side is read.
    code, text = _on_a_terminal(["drift", "ref.json", "cur.parquet"], drifting)
    assert code == 1
    assert "profiling cur.parquet 3/3" in text and "profiling ref" not in text


def test_drift_off_a_terminal_and_with_json_writes_the_report_alone(drifting: Path) -> None:
    done = _piped(["drift", "ref.parquet", "cur.parquet", "--json"], drifting)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["drifted_columns"] == ["x"]
    assert "profiling" not in done.stderr and "\x1b" not in done.stderr
