"""Real processes for the fault-injection tests: a private PostgreSQL cluster, a private Redis, the
API under gunicorn. Never the machine's shared servers: those are only ever read.

Every process runs in its own process group and is killed (group-wide) on the way out; every wait
has a deadline.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from glob import glob
from pathlib import Path
from typing import Any

import pytest
import requests

BASE_DIR = Path(__file__).resolve().parents[2]
START_SECONDS = 30
SECRET_KEY = "integration-only-secret-key-with-enough-length-for-hmac"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(poll)


def _kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=START_SECONDS)


def server_environment(*, database_url: str, **settings: str) -> dict[str, str]:
    """Production settings (``loyalty.settings.base``, DEBUG off) on the given database, with no
    broker and no Redis unless ``settings`` names them: nothing inherited from the test run's
    own configuration."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DATABASE", "CELERY", "REDIS", "LOYALTY_", "DJANGO", "DB_"))
    }
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "loyalty.settings.base",
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        **settings,
    }


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """``manage.py <args>`` in a subprocess; its output, or a failure with the output."""
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, on a free port, owned by the
    ``postgres`` OS user when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        binaries = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries:
            pytest.fail("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are missing")
        self.bin = Path(binaries[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="loyalty-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - fixed command lines
            [*self.as_postgres, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=START_SECONDS * 2,
            check=False,
        )
        assert result.returncode == 0, f"{tool} failed:\n{result.stdout}{result.stderr}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w",
            "-t", str(START_SECONDS), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_SECONDS), "stop"
        )

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        with suppress(AssertionError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


class PrivateRedis:
    """``redis-server`` on a free port, without persistence; stop and start it on the same port."""

    def __init__(self) -> None:
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            pytest.fail("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [
                str(self.executable), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", tempfile.gettempdir(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self._answers, START_SECONDS, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(("127.0.0.1", self.port))
                probe.sendall(b"PING\r\n")
                return probe.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost machine: no goodbye to the connected clients."""
        if self.process is not None:
            _kill_group(self.process)
            self.process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.kill()


class ApiServer:
    """The API under gunicorn with sync workers, as deployed behind a load balancer (which keeps
    the client connections alive, so gunicorn need not: each response closes its connection)."""

    def __init__(self, env: dict[str, str], workers: int = 4) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(  # noqa: S603 - a fixed command line
            [
                sys.executable, "-m", "gunicorn", "loyalty.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                "--worker-class", "sync", "--timeout", "30", "--graceful-timeout", "2",
                "--no-control-socket",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_ready(self) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, "gunicorn exited:\n" + self.log()
            try:
                requests.get(f"{self.url}/health/", timeout=5)
            except requests.RequestException:
                return False
            return True

        wait_for(answers, START_SECONDS, "gunicorn to answer")

    def kill(self) -> None:
        _kill_group(self.process)
        self._reader.join(timeout=START_SECONDS)

    def log(self, last: int = 80) -> str:
        return "".join(self.lines[-last:])


@contextmanager
def api_server(env: dict[str, str], **options: Any) -> Iterator[ApiServer]:
    server = ApiServer(env, **options)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def operator_token(url: str, username: str, password: str) -> str:
    response = requests.post(
        f"{url}/api/v1/auth/token/",
        json={"username": username, "password": password},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access"])


def members_create(url: str, token: str, external_ids: Sequence[str]) -> list[str]:
    ids = []
    for external_id in external_ids:
        response = requests.post(
            f"{url}/api/v1/members/",
            json={"external_id": external_id, "display_name": external_id},
            headers=bearer(token),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        ids.append(str(response.json()["id"]))
    return ids
