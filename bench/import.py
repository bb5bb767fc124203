"""How fast does a spreadsheet of pledges import?

N rows of a realistic mix (items written in Chinese and English, boxes and cases,
bottles, tonnes, a few shipping origins) are written as one XLSX (or CSV) file, then:

A. import: the upload check (read the file, refuse what cannot be imported, store the
   job), then the job, run by a real donations Celery worker process (prefork,
   concurrency 1; ``--in-process`` runs the same code in this process instead): every
   row checked against the catalogue, then every pledge, its lines and its
   pledge.created event written in one transaction. The clock runs from the upload
   until the job is succeeded.
B. reference, service layer: the same lines, already read, posted as one pledge with
   ``create_pledge`` in one transaction.
C. reference, bare CSV parse: ``csv.reader`` over the same rows as CSV text.

It prints lines per second for each and the ratios; it never asserts timing.

    .venv/bin/python -m bench.import --rows 10000
    .venv/bin/python -m bench.import --rows 10000 --format csv --mode valid_rows
    .venv/bin/python -m bench.import --broker redis://127.0.0.1:6379/14 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import func, select

from bench.event_hop import (
    BenchError,
    ScratchDatabases,
    WorkerProcess,
    backend_name,
    redacted,
    refuse_other_consumers,
    start_worker,
    worker_environ,
)
from shared.config import Settings
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime
from shared.taskqueue import prepare_broker

# The target for 10,000 lines.
TARGET_SECONDS = 60.0
WARMUP_TIMEOUT = 120.0
POLL_INTERVAL = 0.05

HEADER = ["物资", "标准", "数量", "单位", "每箱数量", "每瓶容量(毫升)", "保质期至"]
HEADER += ["发货地区代码", "发货地址", "可发货日期", "限定地区", "限定受助类型", "备注"]

# (item as written, standard, unit as written, pack size, bottle ml, quantity range)
KINDS: list[tuple[str, str | None, str, int | None, int | None, tuple[int, int]]] = [
    ("口罩", "GB 19083-2010", "箱", 50, None, (1, 400)),
    ("医用外科口罩", None, "盒", 50, None, (1, 800)),
    ("KN95", None, "只", None, None, (100, 20000)),
    ("mask", None, "pcs", None, None, (100, 50000)),
    ("gloves_exam", "nitrile", "box", 50, None, (1, 500)),
    ("防护服", "GB19082-2009", "件", None, None, (10, 3000)),
    ("护目镜", None, "副", None, None, (10, 2000)),
    ("84消毒液", None, "瓶", None, 500, (10, 5000)),
    ("75%酒精", None, "箱", 24, 500, (1, 300)),
    ("免洗洗手液", None, "升", None, None, (1, 900)),
    ("体温计", None, "台", None, None, (1, 500)),
    ("水果", None, "公斤", None, None, (10, 9000)),
    ("蔬菜", None, "吨", None, None, (1, 20)),
    ("大米", None, "斤", None, None, (100, 40000)),
]
ORIGINS = [
    ("420102", "武汉市江岸区"),
    ("440304", "深圳市福田区"),
    ("310115", "上海市浦东新区"),
    ("110105", "北京市朝阳区"),
    ("330106", "杭州市西湖区"),
]


def generate_rows(n: int, seed: int = 2020) -> list[list[Any]]:
    rng = random.Random(seed)
    today = date(2020, 2, 1)
    rows: list[list[Any]] = []
    for i in range(n):
        item, standard, unit, pack, bottle, (low, high) = KINDS[i % len(KINDS)]
        region, address = ORIGINS[rng.randrange(len(ORIGINS))]
        perishable = item in ("水果", "蔬菜")
        best_before = today + timedelta(days=rng.randrange(5, 30 if perishable else 900))
        rows.append(
            [
                item,
                standard,
                rng.randint(low, high),
                unit,
                pack,
                bottle,
                best_before if perishable or rng.random() < 0.3 else None,
                region,
                address,
                None,
                "4201、4202" if rng.random() < 0.2 else None,
                "医院" if rng.random() < 0.3 else None,
                "仅限一线医护人员" if rng.random() < 0.1 else None,
            ]
        )
    return rows


def as_xlsx(rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("pledges")
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def as_csv(rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue().encode("utf-8-sig")


# Measurements ----------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    lines: int
    seconds: float
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else float("inf")


def new_org(rt: ServiceRuntime) -> uuid.UUID:
    from services.donations.models import Organisation

    org_id = uuid.uuid4()
    with rt.unit_of_work() as session:
        session.add(
            Organisation(
                id=org_id,
                name=f"Bench foundation {org_id.hex[:6]}",
                kind="foundation",
                region="4201",
                status="verified",
                source_version=1,
            )
        )
    return org_id


def lines_of(rt: ServiceRuntime, job_id: uuid.UUID) -> int:
    from services.donations.models import Pledge, PledgeLine

    with rt.session_factory() as session:
        count = session.scalar(
            select(func.count())
            .select_from(PledgeLine)
            .join(Pledge, Pledge.id == PledgeLine.pledge_id)
            .where(Pledge.import_job_id == job_id)
        )
    return int(count or 0)


def job_state(rt: ServiceRuntime, job_id: uuid.UUID) -> tuple[str, int, str | None]:
    from services.donations.models import ImportJob

    with rt.session_factory() as session:
        job = session.get(ImportJob, job_id)
        assert job is not None
        return job.status, job.rows_done, job.detail


def wait_for_job(
    rt: ServiceRuntime, job_id: uuid.UUID, worker: WorkerProcess | None, timeout: float
) -> str:
    deadline = time.perf_counter() + timeout
    while True:
        status, done, detail = job_state(rt, job_id)
        if status in ("succeeded", "failed"):
            if status == "failed":
                raise BenchError(f"the import {job_id} failed: {detail}")
            return status
        if worker is not None:
            worker.check_alive()
        if time.perf_counter() > deadline:
            raise BenchError(f"the import {job_id} did not finish in {timeout:.0f} s ({done} rows)")
        time.sleep(POLL_INTERVAL)


def measure_import(
    rt: ServiceRuntime,
    content: bytes,
    filename: str,
    mode: str,
    lines: int,
    worker: WorkerProcess | None,
    timeout: float,
) -> tuple[Result, float]:
    from services.donations.imports import service as imports

    upload = imports.Upload(
        org_id=new_org(rt), filename=filename, content=content, mode=mode, language="zh"
    )
    start = time.perf_counter()
    submitted = imports.submit(rt, upload)
    checked = time.perf_counter()
    if worker is None:
        status = imports.ImportRunner(rt).run(submitted.job.id)
        if status != "succeeded":
            raise BenchError(f"the import ended {status}: {job_state(rt, submitted.job.id)[2]}")
    else:
        imports.enqueue(rt, submitted.job.id)
        wait_for_job(rt, submitted.job.id, worker, timeout)
    end = time.perf_counter()
    imported = lines_of(rt, submitted.job.id)
    if imported != lines:
        raise BenchError(f"the import wrote {imported} lines, not {lines}")
    where = "in-process" if worker is None else "donations worker"
    return (
        Result(f"import ({filename}, {mode}, {where})", lines, end - start),
        checked - start,
    )


def measure_service_layer(rt: ServiceRuntime, content: bytes) -> Result:
    """The same rows, read and checked beforehand (untimed), posted as one pledge."""
    from services.donations.imports import spreadsheet
    from services.donations.pledges import service as pledges

    sheet = spreadsheet.read_sheet(content)
    checker = spreadsheet.RowChecker(sheet, "zh")
    lines = []
    for number, cells in sheet.rows:
        row = checker.check(number, cells)
        if row.line is None:
            raise BenchError(f"row {number} is not valid: {row.errors}")
        lines.append(row.line)
    org_id = new_org(rt)
    start = time.perf_counter()
    with rt.unit_of_work() as session:
        pledges.create_pledge(
            session,
            rt.outbox,
            org_id=org_id,
            data={"lines": lines, "origin": {"region": "420102", "address": "武汉市江岸区"}},
        )
    end = time.perf_counter()
    return Result("service layer: create_pledge, one pledge", len(lines), end - start)


def measure_csv_parse(content: bytes) -> Result:
    start = time.perf_counter()
    text = content.decode("utf-8-sig")
    rows = sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1
    end = time.perf_counter()
    return Result("bare CSV parse: csv.reader", rows, end - start)


def warm_up(rt: ServiceRuntime, worker: WorkerProcess) -> None:
    """One row through the worker, so its start-up is not timed."""
    from services.donations.imports import service as imports

    content = as_csv(generate_rows(1, seed=1))
    submitted = imports.submit(
        rt, imports.Upload(org_id=new_org(rt), filename="warm-up.csv", content=content)
    )
    imports.enqueue(rt, submitted.job.id)
    wait_for_job(rt, submitted.job.id, worker, WARMUP_TIMEOUT)


# Running -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.import",
        description="Lines per second of a spreadsheet import of pledges, with references.",
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows (default 10000)")
    parser.add_argument("--format", choices=("xlsx", "csv"), default="xlsx")
    parser.add_argument(
        "--mode", choices=("all_or_nothing", "valid_rows"), default="all_or_nothing"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the import job in this process instead of on a donations worker",
    )
    parser.add_argument(
        "--broker",
        default=None,
        help="Celery broker URL, e.g. redis://127.0.0.1:6379/14 "
        "(default: the embedded SQLite broker in a temp dir)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server URL; a scratch database is created on it and dropped at "
        "the end (default: a temp SQLite file)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    args = parser.parse_args(argv)
    if not 1 <= args.rows <= 20_000:
        parser.error("--rows must be from 1 to 20000 (the import's limit)")
    return args


def report(
    settings: Settings, results: list[Result], upload_seconds: float, size: int, rows: int
) -> None:
    imported, service, parse = results
    print()
    print("aidlink pledge import benchmark")
    print(f"  broker     {backend_name(settings.broker_url)}  ({redacted(settings.broker_url)})")
    donations_url = settings.database_url("donations")
    print(f"  database   {backend_name(donations_url)}  ({redacted(donations_url)})")
    print(f"  file       {rows} rows, {size / 1024:.0f} KiB")
    print()
    for label, result in (("A.", imported), ("B.", service), ("C.", parse)):
        print(f"{label} {result.label}")
        print(f"   {result.seconds:8.3f} s   {result.rate:10.0f} lines/s")
    print(f"   (A includes the upload check: {upload_seconds:.3f} s)")
    print()
    print(f"ratio import / service layer  {imported.rate / service.rate:6.3f}")
    print(f"ratio import / bare CSV parse {imported.rate / parse.rate:8.5f}")
    projected = 10_000 / imported.rate
    verdict = "met" if projected <= TARGET_SECONDS else "missed"
    print(
        f"10,000 lines at this rate: {projected:.1f} s "
        f"(target: within {TARGET_SECONDS:.0f} s; {verdict})"
    )


def run(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="aidlink-bench-import-"))
        stack.callback(lambda: shutil.rmtree(tmp, ignore_errors=True))
        environ = {"AIDLINK_VAR_DIR": str(tmp), "AIDLINK_LOG_LEVEL": "WARNING"}
        if args.broker:
            environ["BROKER_URL"] = args.broker
        if args.database_url:
            scratch = ScratchDatabases(args.database_url)
            stack.callback(scratch.drop_all)
            environ["DONATIONS_DATABASE_URL"] = scratch.create("donations")
        settings = Settings.from_env(environ)
        prepare_broker(settings)
        upgrade("donations", settings)

        from services.donations.app import create_app

        app = create_app(settings)
        rt: ServiceRuntime = app.extensions["aidlink"]
        stack.callback(rt.dispose)
        stack.enter_context(app.app_context())

        rows = generate_rows(args.rows)
        content = as_xlsx(rows) if args.format == "xlsx" else as_csv(rows)
        worker = None
        if not args.in_process:
            refuse_other_consumers(rt.celery)
            worker = start_worker(
                "donations", "services.donations.worker", "donations", worker_environ(environ), tmp
            )
            stack.callback(worker.stop)
            print("starting a donations worker ...", flush=True)
            warm_up(rt, worker)
        print(f"importing {args.rows} rows ({args.format}, {args.mode}) ...", flush=True)
        imported, upload_seconds = measure_import(
            rt, content, f"pledges.{args.format}", args.mode, args.rows, worker, args.timeout
        )
        print("reference: the same lines as one pledge through the service layer ...", flush=True)
        service = measure_service_layer(rt, content)
        parse = measure_csv_parse(as_csv(rows))
        report(settings, [imported, service, parse], upload_seconds, len(content), args.rows)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
