"""The real tools the integration tests run: their virtual environments, and an MLflow server.

Tools whose pins clash with evertrain's live in venvs that ``scripts/integration-venvs.sh``
makes (``make test`` runs it); a test whose tool is missing skips, saying why.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("EVERTRAIN_TEST_VENVS") or ROOT / ".venvs")


def ci_is_set() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def tool_venv(tool: str) -> Path:
    """The bin folder of ``tool``'s venv; else a skip that says why it is missing, or with CI
    set a failure (CI must run every integration: a venv that did not build is a broken setup)."""
    bin_dir = VENVS / tool / "bin"
    if not (bin_dir / "python").is_file():
        log = VENVS / f"{tool}.log"
        if log.is_file():
            lines = log.read_text(errors="replace").strip().splitlines()
            why = f"its install failed, see {log}: {lines[-1] if lines else 'empty log'}"
        else:
            why = f"run scripts/integration-venvs.sh {sys.executable} {tool}"
        message = f"{tool} is not installed in {VENVS / tool} ({why})"
        if ci_is_set():
            pytest.fail(f"CI is set, so the {tool} integration must run: {message}", pytrace=False)
        pytest.skip(message)
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool_env(bin_dir: Path) -> dict[str, str]:
    """The environment of a tool's process: its venv's bin first on PATH, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    return env


def run_tool(
    args: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """A tool's command run to its end, its output captured as text (the caller checks the code)."""
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200, or fail with the process's output if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"the server exited ({proc.returncode}):\n{out[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f}s")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], health: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server process that answers ``health``; killed (with its children) at the end."""
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_http(health, proc)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, artifacts served by it); yields its URL."""
    bin_dir = tool_venv("mlflow")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    args = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{port}"
    with process(args, tool_env(bin_dir), f"{url}/health"):
        yield url
