"""Start the web examples as a newcomer runs them: a `queueing worker` process and the app
in a process of its own (uvicorn, hypercorn's trio worker, or waitress) on loopback."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "web"
#: How each app is started (from examples/web), by test id.
APPS = {
    "fastapi-uvicorn": ["fastapi_app.py", "--server", "uvicorn"],
    "fastapi-hypercorn-trio": ["fastapi_app.py", "--server", "hypercorn-trio"],
    "flask-waitress": ["flask_app.py"],
}
#: The worker process; a short shutdown: tasks a test left running are cut off at once.
WORKER = [sys.executable, "-m", "queueing", "worker", "tasks", "--shutdown-timeout", "5"]
#: Seconds a process gets to start answering, or to exit after SIGTERM.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(broker: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "QUEUEING_BROKER": broker, **extra}
    # The worktree's packages first, whatever installed copy the interpreter also has.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    output: IO[bytes] = log.open("wb")
    with output:
        return subprocess.Popen(
            command, cwd=EXAMPLES, env=env, stdout=output, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL if it is still running after `timeout`; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


class Service:
    """One web example and one worker process, on a Redis key prefix of their own."""

    def __init__(self, app: str, redis_url: str, logs: Path, **sizes: str) -> None:
        self.app = app
        self.broker = f"{redis_url}?prefix=web{secrets.token_hex(4)}"
        self.logs = logs
        self.env = _environment(self.broker, **sizes)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.worker = _spawn(
            [*WORKER, "--broker", self.broker],
            self.env,
            logs / "worker.log",
        )
        command = [sys.executable, *APPS[app], "--port", str(self.port)]
        self.web = _spawn(command, self.env, logs / "web.log")
        try:
            self._wait_until_up()
        except BaseException:
            self.close()
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for name, process in (("web app", self.web), ("worker", self.worker)):
                if process.poll() is not None:
                    raise AssertionError(f"the {name} exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.app} did not answer in time:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def stop_web(self) -> int:
        """Stop the web app (SIGTERM); its exit code (0: a clean stop)."""
        code = stop(self.web)
        if code == -signal.SIGTERM and "Application shutdown complete" in self.log():
            code = 0  # uvicorn re-raises the signal once it has shut down gracefully
        return code

    def close(self) -> tuple[int, int]:
        """Stop the web app, then the worker; their exit codes (0: a clean stop)."""
        return self.stop_web(), stop(self.worker)
