"""What the embedded stack costs when nothing happens, and how fast it still reacts.

Starts the stack as ``make run`` does (``aidlink migrate``, ``aidlink demo load``, then
the Procfile under honcho) on a scratch ``AIDLINK_VAR_DIR`` and ports of its own, waits
for the gateway to answer and the stack to settle, then samples every process of the
stack (honcho and everything under it) for ``--duration`` seconds from /proc: the CPU
time each used (its own and its reaped children's), its resident memory (RSS) and its
proportional share of memory (PSS: pages shared with other processes, as after a fork,
counted once in all). It prints them next to the targets (at most 2% of one core and
700 MB in all), then registers organisations at the gateway one at a time, each after
``--gap`` seconds of quiet (long enough for idle workers to have backed off), and times
how long each ``org.registered`` event takes to reach the donations and dispatch
workers' inboxes through the broker.

Figures only: the exit status is 1 only when the stack could not start or an event
never arrived.

    .venv/bin/python -m bench.idle
    .venv/bin/python -m bench.idle --duration 120 --reactions 10
    WORKER_POOL=prefork .venv/bin/python -m bench.idle   # any Procfile variable
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_CPU = 2.0  # % of one core
TARGET_MEMORY = 700.0  # MB in all
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PORTS = {"gateway": 18400, "donations": 18401, "dispatch": 18402, "community": 18403}


class BenchError(Exception):
    pass


# Reading /proc -----------------------------------------------------------------------


@dataclass
class Proc:
    pid: int
    name: str
    cpu: float  # seconds: own user + system, and that of its reaped children
    rss: float  # MB
    pss: float  # MB


def _stat(pid: int) -> tuple[int, float] | None:
    """The parent and the CPU seconds of ``pid`` (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15).
    return int(fields[1]), sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def _memory(pid: int) -> tuple[float, float]:
    rss = pss = 0.0
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    if not rss:
        with suppress(OSError, IndexError, ValueError):
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
            pss = rss
    return rss, pss


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    text = " ".join(words)
    if len(words) > 1 and words[1].endswith("keep-running"):
        return "keep-running (sh)"
    if "services.backends" in text:
        return "gunicorn back ends"
    for service in PORTS:
        if f"services.{service}.app" in text:
            return f"gunicorn {service}"
        if f"services.{service}.worker" in text:
            return f"celery worker {service}"
    if "services.beat" in text:
        return "celery beat"
    if "honcho" in text:
        return "honcho"
    return text[:60] or "?"


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                children.setdefault(found[0], []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def snapshot(root: int) -> dict[int, Proc]:
    procs = {}
    for pid in tree(root):
        found = _stat(pid)
        if found is None:
            continue
        rss, pss = _memory(pid)
        procs[pid] = Proc(pid, _name(pid), found[1], rss, pss)
    return procs


def _role(proc: Proc, parents: dict[int, int], names: dict[int, str]) -> str:
    """``gunicorn gateway`` -> ``gunicorn gateway (master)`` or ``(worker)``; a Celery
    worker's ``(main)`` process or its ``(pool)``."""
    if proc.name.startswith(("gunicorn", "celery worker")):
        forked = names.get(parents.get(proc.pid, 0), "") == proc.name
        roles = ("worker", "master") if proc.name.startswith("gunicorn") else ("pool", "main")
        return f"{proc.name} ({roles[0] if forked else roles[1]})"
    return proc.name


# The stack ----------------------------------------------------------------------------


def stack_environ(var_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "AIDLINK_VAR_DIR": str(var_dir),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # The reaction probe registers several organisations from one address.
        "AIDLINK_RATELIMIT_ENABLED": "false",
    }
    for service, port in PORTS.items():
        env[f"{service.upper()}_BIND"] = f"127.0.0.1:{port}"
        if service != "gateway":
            env[f"{service.upper()}_URL"] = f"http://127.0.0.1:{port}"
    return env


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    for command in (["migrate"], ["demo", "load"]):
        done = subprocess.run(
            [str(BIN / "aidlink"), *command], env=env, cwd=ROOT, capture_output=True
        )
        if done.returncode:
            raise BenchError(f"aidlink {' '.join(command)} failed:\n{done.stderr.decode()}")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(honcho: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = set(PORTS)
    while pending:
        if honcho.poll() is not None:
            raise BenchError(f"the stack exited:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{sorted(pending)} did not answer in {timeout:.0f} s:\n{tail(log)}")
        for service in sorted(pending):
            with suppress(requests.RequestException):
                url = f"http://127.0.0.1:{PORTS[service]}/readyz"
                if requests.get(url, timeout=2).status_code == 200:
                    pending.discard(service)
        time.sleep(0.5)


def stop(honcho: subprocess.Popen[bytes]) -> None:
    pids = tree(honcho.pid)
    if honcho.poll() is None:
        honcho.send_signal(signal.SIGINT)
        try:
            honcho.wait(30)
        except subprocess.TimeoutExpired:
            honcho.kill()
            honcho.wait(10)
    for pid in pids:  # anything honcho left behind
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


# Measuring ---------------------------------------------------------------------------


def sample(root: int, duration: float) -> tuple[list[tuple[str, Proc, float]], float]:
    """Each process with its CPU seconds over ``duration``, and the wall time."""
    before = snapshot(root)
    started = time.monotonic()
    time.sleep(duration)
    after = snapshot(root)
    wall = time.monotonic() - started
    parents = {pid: (_stat(pid) or (0, 0.0))[0] for pid in after}
    names = {pid: proc.name for pid, proc in after.items()}
    rows = []
    for pid, proc in sorted(after.items(), key=lambda item: item[1].name):
        used = proc.cpu - before[pid].cpu if pid in before else proc.cpu
        rows.append((_role(proc, parents, names), proc, used))
    return rows, wall


def inbox_count(var_dir: Path, service: str) -> int:
    with suppress(sqlite3.Error):
        conn = sqlite3.connect(f"file:{var_dir / f'{service}.db'}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
        finally:
            conn.close()
    return 0


def react(var_dir: Path, timeout: float = 30) -> dict[str, float]:
    """Register an organisation at the gateway; seconds from its answer until its event
    is in the donations and dispatch inboxes."""
    before = {s: inbox_count(var_dir, s) for s in ("donations", "dispatch")}
    tag = uuid.uuid4().hex[:8]
    response = requests.post(
        f"http://127.0.0.1:{PORTS['gateway']}/api/v1/auth/register",
        json={
            "organisation": {
                "name": f"Idle Bench Hospital {tag}",
                "kind": "hospital",
                "region": "420102",
                "address": f"{tag} Bench Road, Jiang'an District, Wuhan",
            },
            "user": {
                "email": f"idle-{tag}@example.org",
                "password": "idle-bench-password-2020",
                "name": "Idle Bench",
            },
        },
        timeout=30,
    )
    answered = time.monotonic()
    if response.status_code != 201:
        raise BenchError(f"registration answered {response.status_code}: {response.text[:300]}")
    seen: dict[str, float] = {}
    while len(seen) < len(before):
        if time.monotonic() - answered > timeout:
            raise BenchError(f"org.registered did not reach {sorted(set(before) - set(seen))}")
        for service, count in before.items():
            if service not in seen and inbox_count(var_dir, service) > count:
                seen[service] = time.monotonic() - answered
        time.sleep(0.005)
    return seen


def report(rows: list[tuple[str, Proc, float]], wall: float) -> None:
    print(f"{'process':<32} {'pid':>7} {'RSS MB':>8} {'PSS MB':>8} {'CPU s':>7} {'% core':>7}")
    for role, proc, used in rows:
        print(
            f"{role:<32} {proc.pid:>7} {proc.rss:>8.1f} {proc.pss:>8.1f} "
            f"{used:>7.2f} {100 * used / wall:>7.2f}"
        )
    rss = sum(proc.rss for _, proc, _ in rows)
    pss = sum(proc.pss for _, proc, _ in rows)
    cpu = 100 * sum(used for _, _, used in rows) / wall
    python = sum(1 for role, _, _ in rows if not role.startswith("keep-running"))
    print()
    print(f"processes   {len(rows)} ({python} Python, {len(rows) - python} shell)")
    target = f"(target: at most {TARGET_MEMORY:.0f} MB)"
    print(f"memory      {rss:.0f} MB RSS, {pss:.0f} MB PSS   {target}")
    print(f"CPU         {cpu:.2f}% of one core over {wall:.0f} s   (target: at most {TARGET_CPU}%)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after start-up")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds sampled")
    parser.add_argument("--reactions", type=int, default=5, help="events timed afterwards")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds of quiet before each")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="aidlink-idle-"))
    var_dir = tmp / "var"
    log = tmp / "honcho.log"
    env = stack_environ(var_dir)
    honcho = None
    try:
        shown = ", ".join(
            f"{k}={env.get(k, d)}" for k, d in (("WEB_WORKERS", "1"), ("WORKER_POOL", "solo"))
        )
        print(f"starting the stack in {tmp} ({shown})")
        honcho = start(env, log)
        wait_ready(honcho, log)
        print(f"ready; settling {args.settle:.0f} s, then sampling {args.duration:.0f} s")
        time.sleep(args.settle)
        rows, wall = sample(honcho.pid, args.duration)
        report(rows, wall)
        if args.reactions:
            reactions = []
            for _ in range(args.reactions):
                time.sleep(args.gap)
                reactions.append(react(var_dir))
            print()
            print(f"reaction after {args.gap:.0f} s idle, registration answered -> event in inbox:")
            for service in ("donations", "dispatch"):
                times = [1000 * r[service] for r in reactions]
                print(
                    f"  {service:<10} median {statistics.median(times):6.0f} ms, "
                    f"max {max(times):6.0f} ms  ({', '.join(f'{t:.0f}' for t in times)})"
                )
        return 0
    except BenchError as error:
        print(f"idle bench failed: {error}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if honcho is not None:
            stop(honcho)
        if args.keep:
            print(f"kept {tmp} (honcho.log has the stack's output)")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
