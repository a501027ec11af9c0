"""Driving the helper processes of ``_worker.py`` from a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("_worker.py")


class Worker:
    """One helper process that imports only the store, driven by JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def send(self, *command: Any) -> None:
        self.write(json.dumps(list(command)))

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.pid} ended (exit {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer and len(answer) == 1:
            raise RuntimeError(f"worker {self.proc.pid} failed:\n{answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def race(pair: list[Worker], commands: list[list[Any]], first: int = 0) -> list[dict[str, Any]]:
    """Arm each worker with its command, then release them together; their answers in order."""
    for worker, command in zip(pair, commands, strict=True):
        worker.send(*command)
    for worker in pair:
        assert worker.recv() == {"armed": True}
    order = pair[first:] + pair[:first]
    for worker in order:
        worker.write("go")
    return [worker.recv() for worker in pair]
