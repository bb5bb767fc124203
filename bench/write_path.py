"""How much of a bare web server's write throughput does pledge creation keep?

Measurement A (write path): ``POST /api/v1/pledges`` through the gateway, as a signed-in
donor, with wrk. Each request is authenticated and rate-limited at the gateway,
forwarded with a signed internal token to the donations service, validated, converted
through the catalogue, written with its outbox row in one transaction, and its
``pledge.created`` event is published to the broker after the commit.

Measurement B (reference): the same request body posted by wrk to a bare Flask
endpoint that parses the JSON and answers 201, under the same gunicorn settings as the
services (the Procfile's: ``--workers 2 --threads 4``) on the same machine, in the same
run.

Measurement C (the ceiling of the design): a Flask endpoint that only forwards the body
over HTTP to the bare endpoint, as the gateway forwards to a service, under the same
settings. No gateway in front of a service can do better than this; its ratio to B
bounds what A can reach on this machine.

It prints requests per second and latency percentiles of both, and their ratio next
to the target (at least 0.30). It prints figures only and never fails on them. wrk
must be installed (Debian: ``apt-get install wrk``).

    .venv/bin/python -m bench.write_path --duration 15
    .venv/bin/python -m bench.write_path --broker redis://127.0.0.1:6379/14 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask, request

from bench.event_hop import (
    BenchError,
    ScratchDatabases,
    WorkerProcess,
    no_interrupts,
    redacted,
    spawn,
    worker_environ,
)
from shared.config import Settings
from shared.migrations import upgrade

TARGET_RATIO = 0.30
# Issue 25's target restated: pledge creation at least half of what a gateway that only
# forwards reaches on the same machine.
TARGET_OF_CEILING = 0.5
GUNICORN_FLAGS = ("--workers", "2", "--threads", "4", "--keep-alive", "75")
PLEDGE = {
    "lines": [
        {
            "item": "mask",
            "standard": "GB19083-2010",
            "quantity": "20",
            "unit": "box",
            "pack_size": 50,
        },
        {"item": "disinfectant_84", "quantity": "2", "unit": "l"},
    ],
    "origin": {"region": "4403", "address": "Warehouse 3, Futian District, Shenzhen"},
}
PASSWORD = "bench-password-2020"


def hop_app() -> Flask:
    """The ceiling of a gateway in front: forward the body to the bare endpoint over
    HTTP (one pooled connection per thread, as the gateway's client keeps) and answer
    with its response; no authentication, no database."""
    app = Flask("bench.hop")
    target = os.environ.get("BENCH_HOP_TARGET", "http://127.0.0.1:18103") + "/api/v1/pledges"
    local = threading.local()

    @app.post("/api/v1/pledges")
    def forward() -> Any:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = requests.Session()
        answer = client.post(
            target,
            data=request.get_data(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        return answer.json(), answer.status_code

    return app


def bare_app() -> Flask:
    """The reference: parse the body, answer 201 with a small JSON document."""
    app = Flask("bench.bare")

    @app.post("/api/v1/pledges")
    def create() -> Any:
        body = request.get_json()
        return {"id": str(uuid.uuid4()), "lines": len(body["lines"])}, 201

    return app


@dataclass
class Server(WorkerProcess):
    """A gunicorn server: started, logged and stopped as event_hop's workers are."""

    url: str = ""

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} exited; its log ends:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + path, timeout=2).status_code < 500:
                    return
            time.sleep(0.2)
        raise BenchError(f"{self.label} did not answer in {timeout:.0f} s:\n{self.log_tail()}")


def start_gunicorn(
    label: str, app: str, port: int, env: Mapping[str, str], log_dir: Path
) -> Server:
    """Gunicorn serving ``app`` on ``port``, refused at once if something already
    listens there (another benchmark's stack would answer its health check)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise BenchError(f"port {port} ({label}) is taken: is another benchmark still running?")
    log_path = log_dir / f"gunicorn-{label}.log"
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        *GUNICORN_FLAGS,
        "--control-socket",
        str(log_dir / f"gunicorn-{label}.ctl"),
        app,
    ]
    return Server(label, spawn(cmd, env, log_path), log_path, url=f"http://127.0.0.1:{port}")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` and every process under it (a
    gunicorn master and its workers), from /proc; 0 where /proc is not to be had."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command may hold spaces and parentheses: split after its last ")".
            fields = entry.read_text().rsplit(")", 1)[1].split()
            stats[int(entry.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])))
    wanted = {pid}
    grew = True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in wanted and child not in wanted:
                wanted.add(child)
                grew = True
    return sum(stats[p][1] for p in wanted if p in stats) / ticks


@dataclass
class WrkResult:
    label: str
    requests_per_second: float
    requests: int
    non_2xx: int
    errors: str
    latency: dict[str, str]


def run_wrk(
    label: str,
    url: str,
    headers: Mapping[str, str],
    duration: int,
    connections: int,
    tmp: Path,
) -> WrkResult:
    script = tmp / f"{label}.lua"
    header_lines = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
    )
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(PLEDGE))}\n'
        f'wrk.headers["Content-Type"] = "application/json"\n{header_lines}\n'
    )
    cmd = [
        "wrk",
        "--threads",
        "2",
        "--connections",
        str(connections),
        "--duration",
        f"{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "--script",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise BenchError(f"could not read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    return WrkResult(
        label,
        float(rps.group(1)),
        int(total.group(1)),
        int(non_2xx.group(1)) if non_2xx else 0,
        errors.group(0) if errors else "",
        latency,
    )


@contextlib.contextmanager
def stack(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[Server, Server, Server, Server]]:
    environ = {
        "AIDLINK_VAR_DIR": str(tmp),
        "AIDLINK_LOG_LEVEL": "WARNING",
        # The rate limits guard a real deployment; here they would cap the figure.
        "AIDLINK_RATELIMIT_ENABLED": "0",
        # As the Procfile runs its web servers.
        "AIDLINK_OUTBOX_RELAY": "background",
        "GATEWAY_BIND": "127.0.0.1:18100",
        "DONATIONS_URL": "http://127.0.0.1:18101",
        "DISPATCH_URL": "http://127.0.0.1:18102",
    }
    scratch = ScratchDatabases(args.database_url) if args.database_url else None
    if args.broker:
        environ["BROKER_URL"] = args.broker
    servers: list[Server] = []
    try:
        if scratch is not None:
            for name in ("gateway", "donations", "dispatch"):
                environ[f"{name.upper()}_DATABASE_URL"] = scratch.create(name)
        env = worker_environ(environ)
        os.environ.update(environ)
        settings = Settings.from_env()
        for name in ("gateway", "donations"):
            upgrade(name, settings)
        gateway = start_gunicorn("gateway", "services.gateway.app:create_app()", 18100, env, tmp)
        servers.append(gateway)
        donations = start_gunicorn(
            "donations", "services.donations.app:create_app()", 18101, env, tmp
        )
        servers.append(donations)
        bare = start_gunicorn("bare", "bench.write_path:bare_app()", 18103, env, tmp)
        servers.append(bare)
        hop = start_gunicorn(
            "hop", "bench.write_path:hop_app()", 18104, {**env, "BENCH_HOP_TARGET": bare.url}, tmp
        )
        servers.append(hop)
        gateway.wait_ready("/healthz")
        donations.wait_ready("/healthz")
        bare.wait_ready("/")
        hop.wait_ready("/")
        yield gateway, donations, bare, hop
    finally:
        with no_interrupts():
            for server in servers:
                server.stop()
            if scratch is not None:
                scratch.drop_all()


def donor_headers(gateway: Server) -> dict[str, str]:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.org"
    registered = requests.post(
        gateway.url + "/api/v1/auth/register",
        json={
            "organisation": {"name": "Bench Foundation", "kind": "foundation", "region": "4403"},
            "user": {"email": email, "password": PASSWORD, "name": "Bench Donor"},
        },
        timeout=30,
    )
    if registered.status_code != 201:
        raise BenchError(f"registration failed: {registered.status_code} {registered.text}")
    login = requests.post(
        gateway.url + "/api/v1/auth/login",
        json={"email": email, "password": PASSWORD},
        timeout=30,
    )
    if login.status_code != 200:
        raise BenchError(f"sign-in failed: {login.status_code} {login.text}")
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--broker", help="broker URL (default: the embedded SQLite transport)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; scratch databases are created and dropped on it",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="aidlink-write-path-"))
    try:
        with stack(args, tmp) as (gateway, donations, bare, hop):
            headers = donor_headers(gateway)
            # A first pledge end to end, so connections and caches are warm.
            first = requests.post(
                gateway.url + "/api/v1/pledges", json=PLEDGE, headers=headers, timeout=30
            )
            if first.status_code != 201:
                raise BenchError(f"a pledge was refused: {first.status_code} {first.text}")
            results = []
            cpu: dict[str, float] = {}
            for label, url, hdrs in (
                ("bare", bare.url + "/api/v1/pledges", {}),
                ("hop", hop.url + "/api/v1/pledges", {}),
                ("gateway", gateway.url + "/api/v1/pledges", headers),
            ):
                run_wrk(label, url, hdrs, 3, args.connections, tmp)  # warm-up
                servers = {"gateway": gateway, "donations": donations}
                before = {name: _cpu_seconds(s.proc.pid) for name, s in servers.items()}
                results.append(run_wrk(label, url, hdrs, args.duration, args.connections, tmp))
                if label == "gateway":
                    cpu = {
                        name: _cpu_seconds(s.proc.pid) - before[name] for name, s in servers.items()
                    }
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bare_result, hop_result, gateway_result = results
    settings = Settings.from_env()
    print(f"broker: {redacted(settings.broker_url)}")
    print(f"database: {redacted(settings.database_url('donations'))}")
    print(f"wrk: 2 threads, {args.connections} connections, {args.duration} s each")
    print(f"{'':34} {'req/s':>9} {'requests':>9} {'non-2xx':>8}  p50 / p90 / p99")
    for label, result in (
        ("bare Flask endpoint (reference)", bare_result),
        ("one HTTP hop to it (the ceiling)", hop_result),
        ("pledge creation via the gateway", gateway_result),
    ):
        lat = " / ".join(result.latency.get(p, "?") for p in ("50", "90", "99"))
        print(
            f"{label:34} {result.requests_per_second:9.1f} {result.requests:9d} "
            f"{result.non_2xx:8d}  {lat} {result.errors}"
        )
    ratio = gateway_result.requests_per_second / bare_result.requests_per_second
    ceiling = hop_result.requests_per_second / bare_result.requests_per_second
    print(f"ratio: {ratio:.2f} (target at least {TARGET_RATIO:.2f})")
    print(
        f"ceiling: {ceiling:.2f} (a gateway that only forwards); pledge creation reaches "
        f"{gateway_result.requests_per_second / hop_result.requests_per_second:.2f} of it "
        f"(target at least {TARGET_OF_CEILING:.2f})"
    )
    if gateway_result.requests:
        print(
            "CPU per pledge: "
            + ", ".join(
                f"{name} {1000 * seconds / gateway_result.requests:.1f} ms"
                for name, seconds in cpu.items()
            )
            + " (web servers' processes; the database's and the broker's not counted)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
