"""Fixtures of the scale-out tests: a real S3 server behind a relay that can cut it off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scalekit import Relay, S3Server, make_bucket, s3_env

from evertrain.store import storage


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    """The S3 server reached through a relay (``relay.cut()`` is an outage); the environment has
    the credentials and the endpoint (as EVERTRAIN_STORAGE_OPTIONS); a fresh bucket each test."""
    relay = Relay(s3_server.port).start()
    env = s3_env(relay.url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.MonkeyPatch.context():
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(
            key="test", secret="test", endpoint_url=s3_server.url, skip_instance_cache=True
        )
        if fs.exists("evertrain"):
            fs.rm("evertrain", recursive=True)
        make_bucket(s3_server.url)
    try:
        yield relay
    finally:
        relay.stop()
        storage.configure(None)


@pytest.fixture()
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spool"
    monkeypatch.setenv("EVERTRAIN_SPOOL_DIR", str(folder))
    return folder
