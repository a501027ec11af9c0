"""Executors: the same job gives the same model in every one; crashes and timeouts are failed outcomes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from evertrain.data.examples import make_churn_stream
from evertrain.data.tables import arrow_table
from evertrain.train.executors import InlineExecutor, LocalExecutor, RayExecutor, get_executor
from evertrain.train.worker import (
    OUT_DIR,
    RESULT_FILE,
    SCORES_CLASSES_FILE,
    SCORES_FILE,
    TrainerSettings,
    TrainJob,
    data_digest,
    write_parts,
)

FEATURES = ["region", "plan", "tenure_months", "monthly_spend", "support_calls", "visits"]
MISBEHAVING = """
import time


def crash(train, valid, context):
    context.log("about to fail")
    raise ValueError("boom: the data was not what this trainer expected")


def sleepy(train, valid, context):
    time.sleep(60)
"""


def _job(folder: Path, project: Path, trainer: dict[str, Any], time_limit: float = 120.0) -> Path:
    rows = make_churn_stream(1500, seed=4)
    write_parts(
        folder, {"train": rows.iloc[:1000], "valid": rows.iloc[1000:1200], "holdout": rows.iloc[1200:]}
    )
    TrainJob(
        trainer=trainer,
        task="binary",
        target="churned",
        features=FEATURES,
        seed=11,
        time_limit=time_limit,
        fingerprint="test",
        project=str(project),
        num_threads=2,
        checkpoint_dir=str(folder / "checkpoints"),
        metrics=["accuracy", "roc_auc", "log_loss"],
    ).write(folder)
    return folder


LIGHTGBM = {
    "kind": "lightgbm",
    "seed": 11,
    "early_stopping_rounds": 10,
    "params": {"num_boost_round": 100, "num_leaves": 7},
}


@pytest.fixture(scope="module")
def local_outcome(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One LightGBM job run by the local executor, compared with the others below."""
    folder = tmp_path_factory.mktemp("local")
    return LocalExecutor().run(_job(folder / "job", folder, LIGHTGBM), time_limit=120)


@pytest.fixture
def misbehaving(project: Path) -> Path:
    (project / "misbehaving.py").write_text(MISBEHAVING)
    return project


def test_local_and_inline_give_the_same_model(tmp_path: Path, project: Path, local_outcome: Any) -> None:
    local = local_outcome
    inline = InlineExecutor().run(_job(tmp_path / "inline", project, LIGHTGBM), time_limit=120)
    assert local.ok and inline.ok, (local.error, inline.error)
    assert local.model == inline.model
    assert local.result["metrics"] == inline.result["metrics"]
    assert "training lightgbm on 1000 rows" in local.log
    assert get_executor("local").name == "local"


def test_a_worker_finishes_its_latency_probe_after_handing_its_outputs_over(
    tmp_path: Path, project: Path, local_outcome: Any
) -> None:
    """A worker process times its model once with the outputs and twice more while its caller
    goes on; in process, the probe is done before the outputs."""
    held = local_outcome.result["holdout_scores"]
    assert held["latency_pending"] and held["ms_per_row"] is None
    assert local_outcome.latency is not None
    figure = local_outcome.latency()
    assert figure is not None and 0 < figure < 50
    local_outcome.wait_for_worker()
    assert local_outcome.latency() == figure
    inline = InlineExecutor().run(_job(tmp_path / "inline", project, LIGHTGBM), time_limit=120)
    assert inline.latency is None and not inline.result["holdout_scores"]["latency_pending"]
    assert inline.result["holdout_scores"]["ms_per_row"] > 0


def test_a_worker_hands_its_holdout_scores_over_as_soon_as_they_are_summed(
    tmp_path: Path, project: Path
) -> None:
    """The caller is told once, with the scores the outputs then hold; what its work on them
    raises does not fail the training."""
    seen: list[tuple[bytes, list[Any]]] = []

    def scores_ready() -> None:
        out = folder / OUT_DIR
        seen.append(((out / SCORES_FILE).read_bytes(), json.loads((out / SCORES_CLASSES_FILE).read_text())))
        raise RuntimeError("the caller's work on the scores failed")

    folder = _job(tmp_path / "job", project, LIGHTGBM)
    outcome = LocalExecutor().run(folder, time_limit=120, scores_ready=scores_ready)
    assert outcome.ok, outcome.error
    [(scores, classes)] = seen
    assert scores == outcome.holdout_scores and classes == outcome.result["holdout_scores"]["classes"]


def test_a_crash_is_a_failed_outcome_with_the_error_and_the_log(tmp_path: Path, misbehaving: Path) -> None:
    trainer = {"kind": "callable", "callable": "misbehaving:crash"}
    outcome = LocalExecutor().run(_job(tmp_path / "crash", misbehaving, trainer), time_limit=120)
    assert not outcome.ok and outcome.model is None
    assert outcome.error == "ValueError: boom: the data was not what this trainer expected"
    assert "about to fail" in outcome.log and "Traceback" in outcome.log
    inline = InlineExecutor().run(_job(tmp_path / "crash-inline", misbehaving, trainer), time_limit=120)
    assert not inline.ok and inline.error == outcome.error


def test_a_training_past_its_time_limit_is_killed(tmp_path: Path, misbehaving: Path) -> None:
    trainer = {"kind": "callable", "callable": "misbehaving:sleepy"}
    outcome = LocalExecutor().run(_job(tmp_path / "slow", misbehaving, trainer), time_limit=3)
    assert not outcome.ok and "timed out after its limit of 3s" in str(outcome.error)


def test_ray_and_local_give_the_same_metrics(
    tmp_path: Path, project: Path, ray_instance: Any, local_outcome: Any
) -> None:
    local = local_outcome
    ray_folder = _job(tmp_path / "ray", project, LIGHTGBM)
    on_ray = RayExecutor().run(ray_folder, time_limit=120)
    assert local.ok and on_ray.ok, (local.error, on_ray.error)
    assert on_ray.result["metrics"] == local.result["metrics"]
    assert on_ray.model == local.model
    assert "training lightgbm" in on_ray.log
    shutil.rmtree(ray_folder)


def test_the_data_digest_names_the_data() -> None:
    """A checkpoint is resumed only on the data it was made from (the digest is in its fingerprint)."""
    rows = make_churn_stream(300, seed=1)
    parts = {"train": arrow_table(rows.iloc[:200]), "valid": arrow_table(rows.iloc[200:])}
    same = {"train": arrow_table(rows.iloc[:200].copy()), "valid": arrow_table(rows.iloc[200:].copy())}
    assert data_digest(parts) == data_digest(same)
    changed = rows.copy()
    changed.loc[5, "monthly_spend"] += 0.01
    other = {"train": arrow_table(changed.iloc[:200]), "valid": parts["valid"]}
    assert data_digest(other) != data_digest(parts)


def test_a_worker_kept_warm_trains_the_same_model(tmp_path: Path, project: Path, local_outcome: Any) -> None:
    """A worker started ahead (as ``evertrain run`` keeps one) gives what a fresh one gives."""
    LocalExecutor.keep_warm()
    try:
        warm = LocalExecutor().run(_job(tmp_path / "warm", project, LIGHTGBM), time_limit=120)
        assert warm.ok, warm.error
        assert "started ahead of this job" in warm.log
        # It read its tables after waiting: with the C library's allocator, not Arrow's default.
        assert "Arrow allocates from system" in warm.log
        assert warm.model == local_outcome.model
        assert warm.result["metrics"] == local_outcome.result["metrics"]
        # The next worker is started once the caller is done with this job, not beside its gates.
        assert LocalExecutor._spare is None
        warm.wait_for_worker()
        assert LocalExecutor._spare is not None
        # A job after a change of environment does not run in a worker started before it.
        os.environ["EVERTRAIN_TEST_MARK"] = "changed"
        try:
            again = LocalExecutor().run(_job(tmp_path / "again", project, LIGHTGBM), time_limit=120)
        finally:
            del os.environ["EVERTRAIN_TEST_MARK"]
        assert again.ok and "started ahead" not in again.log
        assert again.model == local_outcome.model
    finally:
        LocalExecutor.keep_warm(False)
    assert LocalExecutor._spare is None


def test_a_worker_starts_without_what_a_lightgbm_job_does_not_need(tmp_path: Path, project: Path) -> None:
    """A child worker's start is most of a cold local training: it trains a LightGBM job with no SQLAlchemy,
    no scikit-learn (LightGBM needs only SciPy), no spec models (pydantic, YAML) and no Parquet reader."""
    folder = _job(tmp_path / "job", project, LIGHTGBM)
    unused = ("sqlalchemy", "sklearn", "pydantic", "yaml", "evertrain.spec", "pyarrow.parquet")
    probe = (
        "import sys; import evertrain.train.worker as w; code = w.main(sys.argv[1:]); "
        f"print(code, sorted(m for m in {(*unused, 'lightgbm')!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "0 ['lightgbm']"
    assert (folder / "out" / "model.bin").is_file()


def test_a_job_carries_the_trainer_settings_of_the_spec() -> None:
    """A worker reads a job's trainer settings without the spec's models: same fields, same defaults."""
    import dataclasses

    from evertrain.spec import TrainerSpec

    spec = TrainerSpec()
    assert {f.name for f in dataclasses.fields(TrainerSettings)} == set(TrainerSpec.model_fields)
    assert dataclasses.asdict(TrainerSettings()) == spec.model_dump(mode="json")
    written = TrainerSpec.model_validate(LIGHTGBM).model_dump(mode="json")
    assert dataclasses.asdict(TrainerSettings.of(written)) == written


def test_a_worker_started_with_the_step_takes_its_lightgbm_job_and_no_other(
    tmp_path: Path, project: Path, local_outcome: Any
) -> None:
    """A step starts its job's worker as it begins; one started for a LightGBM job (LightGBM imported
    without scikit-learn) gives the model a fresh worker gives, and is not handed a job of another kind."""
    executor = LocalExecutor()
    with executor.prepared(for_lightgbm=True):
        ahead = executor.run(_job(tmp_path / "lightgbm", project, LIGHTGBM), time_limit=120)
    assert ahead.ok and "started ahead of this job" in ahead.log
    assert ahead.model == local_outcome.model
    with executor.prepared(for_lightgbm=True):
        other = executor.run(
            _job(tmp_path / "sklearn", project, {"kind": "sklearn", "seed": 11}), time_limit=120
        )
    assert other.ok and "started ahead" not in other.log
    assert LocalExecutor._spare is None


def _child(code: str, done: int, write: int) -> subprocess.Popen[bytes]:
    """A Python child given the write end of a done pipe as its argument."""
    try:
        return subprocess.Popen([sys.executable, "-c", code, str(write)], pass_fds=(write,))
    finally:
        os.close(write)


def test_the_caller_goes_on_when_the_worker_says_done_and_not_before() -> None:
    """A worker's word that its job succeeded ends the wait while it is still exiting; without
    that word its exit status is what counts, even when a process it started keeps the pipe open."""
    done, write = os.pipe()
    said = _child(
        "import os, sys, time; fd = int(sys.argv[1]); os.write(fd, b'\\n'); os.close(fd); time.sleep(30)",
        done,
        write,
    )
    try:
        code, exiting = LocalExecutor._wait(said, done)
        assert code == 0 and exiting is not None
        assert said.poll() is None, "the wait ended on the word, not on the exit"
    finally:
        said.kill()
        said.wait()
        os.close(done)
    done, write = os.pipe()
    failed = _child("import sys; sys.exit(3)", done, write)
    try:
        assert LocalExecutor._wait(failed, done) == (3, None)
    finally:
        os.close(done)
    done, write = os.pipe()
    # The pipe stays open in a grandchild that outlives the worker (a forked helper).
    orphaned = _child(
        "import os, sys, time\nif os.fork() == 0:\n    time.sleep(5)\n    os._exit(0)\nsys.exit(4)",
        done,
        write,
    )
    try:
        assert LocalExecutor._wait(orphaned, done) == (4, None)
    finally:
        os.close(done)


def test_the_work_beside_a_training_starts_once_the_job_is_under_way(tmp_path: Path, project: Path) -> None:
    """The caller's side work (storing snapshots, scoring the champion) is started by the
    executor once it has the job, not while the caller still prepares it, and only once."""
    for executor in (InlineExecutor(), LocalExecutor()):
        job = _job(tmp_path / executor.name, project, LIGHTGBM)
        seen: list[bool] = []

        def started(job: Path = job, seen: list[bool] = seen) -> None:
            seen.append((job / OUT_DIR / RESULT_FILE).exists())

        outcome = executor.run(job, time_limit=120, started=started)
        assert outcome.ok, outcome.error
        assert seen == [False], executor.name


def test_a_caller_lets_its_worker_go_and_the_next_one_starts_after_it_exits(
    tmp_path: Path, project: Path
) -> None:
    """A training step does not wait for its worker to take down its memory; the worker kept
    warm for the next job is started once that one has exited."""
    LocalExecutor.keep_warm()
    try:
        outcome = LocalExecutor().run(_job(tmp_path / "job", project, LIGHTGBM), time_limit=120)
        assert outcome.ok, outcome.error
        outcome.let_go()
        assert outcome.latency is not None and outcome.latency() is not None
        assert outcome.exiting is not None
        # Read in this order, without a race: a next worker already started means the exit was awaited.
        if LocalExecutor._spare is not None:
            assert not outcome.exiting.is_alive()
        outcome.exiting.join(timeout=60)
        deadline = time.monotonic() + 60
        while LocalExecutor._spare is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert LocalExecutor._spare is not None
    finally:
        LocalExecutor.keep_warm(False)
