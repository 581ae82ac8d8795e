"""``Stack.supervise``: `curvedit up` restarts a child that dies (a kill -9'd worker, a worker that quit
while Redis was away, the embedded Redis) instead of tearing the whole stack down, kills the dead
worker's orphaned work horse, and gives up only on a crash loop. Regression: one dead worker used
to stop the gateway and Redis too, leaving its job `running` until someone restarted the stack."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from contract.settings import Settings
from service.cli.stack import Stack, free_port

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _stack(tmp_path: Path, **kw: float) -> Stack:
    messages: list[str] = []
    stack = Stack(Settings(state_dir=tmp_path), say=messages.append, **kw)  # type: ignore[arg-type]
    stack.messages = messages  # type: ignore[attr-defined]
    return stack


def _supervise_until(stack: Stack, predicate, timeout: float = 15.0) -> str | None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fatal = stack.supervise()
        if fatal or predicate():
            return fatal
        time.sleep(0.05)
    raise AssertionError("supervise() did not get there in time")


def _worker_with_horse(pid_file: Path) -> list[str]:
    """A fake worker that spawns a "work horse" in its own process group (as RQ's SpawnWorker does:
    the horse calls setpgrp, so killing the worker's process group would miss it)."""
    code = (
        "import os, subprocess, time\n"
        "p = subprocess.Popen(['sleep', '120'], preexec_fn=os.setpgrp)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "p.wait()\n"
    )
    return [sys.executable, "-c", code]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return True


def test_a_killed_worker_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    try:
        gateway = stack._spawn("gateway", SLEEPER, dict(os.environ))
        worker = stack._spawn("worker-1", SLEEPER, dict(os.environ))
        old_pid, gateway_pid = worker.proc.pid, gateway.proc.pid
        assert stack.supervise() is None
        os.kill(old_pid, signal.SIGKILL)
        fatal = _supervise_until(stack, lambda: worker.alive() and worker.proc.pid != old_pid)
        assert fatal is None
        assert worker.proc.pid != old_pid and worker.alive()
        assert gateway.alive() and gateway.proc.pid == gateway_pid  # nothing else was touched
        assert any("worker-1 exited (code -9); restarting" in m for m in stack.messages)  # type: ignore[attr-defined]
    finally:
        stack.stop()


def test_a_dead_workers_orphaned_work_horse_is_killed(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    horse_file = tmp_path / "horse.pid"
    argv = _worker_with_horse(horse_file)
    try:
        worker = stack._spawn("worker-1", argv, dict(os.environ))
        deadline = time.monotonic() + 10
        while not (horse_file.exists() and horse_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        horse = int(horse_file.read_text())
        horse_file.unlink()
        os.kill(worker.proc.pid, signal.SIGKILL)
        _supervise_until(stack, lambda: not _alive(horse))
        assert not _alive(horse)
    finally:
        stack.stop()


def test_stop_kills_a_work_horse_left_behind(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    horse_file = tmp_path / "horse.pid"
    argv = _worker_with_horse(horse_file)
    worker = stack._spawn("worker-1", argv, dict(os.environ))
    deadline = time.monotonic() + 10
    while not (horse_file.exists() and horse_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    horse = int(horse_file.read_text())
    os.kill(worker.proc.pid, signal.SIGKILL)
    stack.stop()
    time.sleep(0.2)
    assert not _alive(horse)


def test_a_crash_loop_gives_up_with_a_reason(tmp_path: Path) -> None:
    stack = _stack(tmp_path, max_quick_restarts=3, max_backoff_s=0.1)
    try:
        stack._spawn("worker-1", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
        fatal = _supervise_until(stack, lambda: False, timeout=30)
        assert fatal is not None
        assert "worker-1 (exit code 3) keeps exiting right after each restart (3 times in a row)" in fatal
    finally:
        stack.stop()


def test_the_embedded_redis_comes_back_on_its_port_with_its_data(tmp_path: Path) -> None:
    import redis

    stack = _stack(tmp_path)
    try:
        stack._start_redis()
        client = redis.Redis.from_url(stack.redis_url)
        client.set("survives", "yes")
        time.sleep(1.2)  # appendfsync everysec
        server = next(c for c in stack.children if c.name == "redis")
        os.kill(server.proc.pid, signal.SIGKILL)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        assert _supervise_until(stack, answers) is None
        assert client.get("survives") == b"yes"
        client.close()
    finally:
        stack.stop()


def test_free_port_helper_still_works() -> None:  # the restart path parses the port back out
    assert 0 < free_port() < 65536
