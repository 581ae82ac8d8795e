"""Benchmark: the gateway under open event streams. Status polls (``GET /v1/edit-jobs/{id}``)
p50 / p99 / max latency and throughput while 0, 50 and 200 SSE streams follow a running job.

Everything runs on loopback: an embedded ``redis-server`` on a free port (as ``curvedit up``
starts it), one real gateway (``uvicorn service.main:create_app --factory``, one process), a job
record created and marked ``running`` directly through the job store, and a publisher that
appends an event and moves the job's progress every ``--tick`` seconds — each tick wakes every
open stream, which then reads the record and the new events and sends them. The streams are
held by a separate client process (asyncio + httpx); the polls come from ``--pollers`` threads
in this process, for ``--seconds`` per level (and at most ``--max-requests``). After each level
the stream process reports how many events its streams received, so a stalled stream shows;
``gw CPU`` is the gateway process's CPU time per second of the level (1.0 = one core busy).

Target (issue 9): p99 < 25 ms and no stall with 200 open streams on 2 cores.

``--src DIR`` serves the gateway from another checkout (e.g. a ``git worktree`` of an older
commit) to compare, in one run, against the code before async streaming.

Rerun: ``.venv/bin/python bench/bench_api.py [--levels 0,50,200] [--seconds 10] [--pollers 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import redis  # noqa: E402

from contract.store.jobs import JobStore  # noqa: E402
from service.cli.stack import find_redis_server  # noqa: E402

KEY = "bench-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not come up within {timeout:.0f} s")


# ---------------------------------------------------------------- stream holder (child process)


async def hold_streams(url: str, job_id: str, n: int, control: Any) -> None:
    """Open ``n`` streams; print "open" once each got its first event; on "count" print the
    number of log events received since the last "count"; exit on EOF."""
    received = [0] * n
    ready = asyncio.Event()
    opened = 0

    async def follow(i: int, client: httpx.AsyncClient) -> None:
        nonlocal opened
        headers = {"Authorization": f"Bearer {KEY}"}
        async with client.stream("GET", f"{url}/v1/edit-jobs/{job_id}/events/stream", headers=headers) as resp:
            resp.raise_for_status()
            first = True
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    if first:
                        first = False
                        opened += 1
                        if opened == n:
                            ready.set()
                    if line == "event: log":
                        received[i] += 1

    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), limits=limits) as client:
        tasks = [asyncio.create_task(follow(i, client)) for i in range(n)]
        await asyncio.wait_for(ready.wait(), 60)
        print("open", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, control.readline)
            if not line:
                break
            print(f"count {sum(received)} {min(received)}", flush=True)
            received[:] = [0] * n
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------- driver


class Stack:
    def __init__(self, tmp: Path, src: Path, max_streams: int) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        rport, gport = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{rport}/0"
        self.url = f"http://127.0.0.1:{gport}"
        self.procs.append(
            subprocess.Popen(
                [find_redis_server(), "--bind", "127.0.0.1", "--port", str(rport), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: redis.Redis.from_url(self.redis_url).ping(), "redis-server")
        for name in ("models", "data", "out", "datasets", "state"):
            (tmp / name).mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CURVEDIT_")}
        env.update(
            PYTHONPATH=str(src),
            CURVEDIT_REDIS_URL=self.redis_url,
            CURVEDIT_API_KEYS=f"bench:{KEY}",
            CURVEDIT_STATE_DIR=str(tmp / "state"),
            CURVEDIT_MODEL_ROOT=str(tmp / "models"),
            CURVEDIT_DATA_ROOT=str(tmp / "data"),
            CURVEDIT_OUTPUT_ROOT=str(tmp / "out"),
            CURVEDIT_DATASET_DIR=str(tmp / "datasets"),
            CURVEDIT_MAX_STREAMS_PER_KEY=str(max_streams),
        )
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(gport), "--log-level", "warning", "--no-access-log"],
                cwd=str(src),
                env=env,
            )
        )
        self.gateway_pid = self.procs[-1].pid
        wait_for(lambda: httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200, "the gateway")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


class Publisher(threading.Thread):
    """The running job's worker, simulated: every ``tick`` s one event and a progress update."""

    def __init__(self, store: JobStore, job_id: str, tick: float) -> None:
        super().__init__(daemon=True)
        self.store, self.job_id, self.tick = store, job_id, tick
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        step = 0
        while not self.stop.wait(self.tick):
            step += 1
            self.store.append_event(self.job_id, "info", f"batch {step}", {"kind": "bench", "step": step})
            self.store.set_progress(self.job_id, (step % 1000) / 1000, tokens_done=step * 512, tokens_total=512_000)
            self.sent += 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def poll(url: str, job_id: str, seconds: float, pollers: int, max_requests: int) -> tuple[list[float], int, float]:
    """``pollers`` threads GET the job back to back; returns (latencies s, errors, elapsed s)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=url, timeout=30.0) as client:
            while time.monotonic() < deadline:
                with lock:
                    if len(latencies) + errors >= max_requests:
                        return
                t0 = time.perf_counter()
                try:
                    ok = client.get(f"/v1/edit-jobs/{job_id}", headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors += 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.monotonic() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="0,50,200", help="open streams per measurement (comma-separated)")
    ap.add_argument("--seconds", type=float, default=10.0, help="polling time per level")
    ap.add_argument("--max-requests", type=int, default=20_000, help="at most this many polls per level")
    ap.add_argument("--pollers", type=int, default=4, help="concurrent polling clients")
    ap.add_argument("--tick", type=float, default=0.25, help="seconds between the simulated worker's updates")
    ap.add_argument("--src", type=Path, default=REPO, help="checkout the gateway is served from")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="curvedit-bench-api-") as tmp:
        stack = Stack(Path(tmp), args.src.resolve(), max_streams=max(levels) + 16)
        try:
            store = JobStore(redis.Redis.from_url(stack.redis_url))
            job_id = store.create("bench", {"model": {"path": "bench"}})["id"]
            store.mark_running(job_id, "bench-worker")
            publisher = Publisher(store, job_id, args.tick)
            publisher.start()
            for n in levels:
                holder = None
                if n:
                    holder = subprocess.Popen(
                        [sys.executable, __file__, "--hold", stack.url, job_id, str(n)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    assert holder.stdout is not None and holder.stdin is not None
                    if holder.stdout.readline().strip() != "open":
                        raise SystemExit(f"the {n} streams did not open")
                    holder.stdin.write("count\n")
                    holder.stdin.flush()
                    holder.stdout.readline()  # reset the counters: count only the measured window
                sent_before = publisher.sent
                cpu_before = cpu_seconds(stack.gateway_pid)
                latencies, errors, elapsed = poll(stack.url, job_id, args.seconds, args.pollers, args.max_requests)
                gateway_cpu = (cpu_seconds(stack.gateway_pid) - cpu_before) / elapsed
                ticks = publisher.sent - sent_before
                delivered, slowest = 0, 0
                if holder is not None:
                    assert holder.stdout is not None and holder.stdin is not None
                    holder.stdin.write("count\n")
                    holder.stdin.flush()
                    _, total, least = holder.stdout.readline().split()
                    delivered, slowest = int(total), int(least)
                    holder.stdin.close()
                    holder.wait(30)
                rows.append(
                    {
                        "streams": n,
                        "polls": len(latencies),
                        "errors": errors,
                        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
                        "p99_ms": 1000 * pct(latencies, 0.99) if latencies else float("nan"),
                        "max_ms": 1000 * max(latencies) if latencies else float("nan"),
                        "rps": len(latencies) / elapsed,
                        "ticks": ticks,
                        "gateway_cpu": gateway_cpu,
                        "events_per_stream": (delivered / n) if n else None,
                        "slowest_stream_events": slowest if n else None,
                    }
                )
            publisher.stop.set()
        finally:
            stack.stop()

    cores = os.cpu_count()
    print(f"\nGET /v1/edit-jobs/{{id}} while SSE streams follow a running job ({args.pollers} pollers, "
          f"{args.seconds:.0f} s per level, an event every {args.tick} s; {cores} CPUs; gateway from {args.src})")
    print(f"{'streams':>8} {'polls':>7} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8} "
          f"{'events sent':>12} {'got/stream':>11} {'slowest':>8} {'gw CPU':>7}")
    for r in rows:
        per = "-" if r["events_per_stream"] is None else f"{r['events_per_stream']:.1f}"
        slow = "-" if r["slowest_stream_events"] is None else str(r["slowest_stream_events"])
        print(f"{r['streams']:>8} {r['polls']:>7} {r['errors']:>4} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f} {r['rps']:>8.0f} {r['ticks']:>12} {per:>11} {slow:>8} {r['gateway_cpu']:>6.0%}")
    worst = max(rows, key=lambda r: r["streams"])
    verdict = "met" if worst["p99_ms"] < 25 and worst["errors"] == 0 else "NOT met"
    print(f"target p99 < 25 ms with {worst['streams']} streams: {verdict} (p99 {worst['p99_ms']:.1f} ms)")
    print("rerun: .venv/bin/python bench/bench_api.py [--levels 0,50,200] [--seconds 10] [--pollers 4] [--src DIR]")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--hold":
        asyncio.run(hold_streams(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.stdin))
    else:
        main()
