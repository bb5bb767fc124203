"""Spreadsheet imports of pledges through the gateway, run by real donations workers:
good and bad files, both modes, progress, duplicates, and a worker killed mid-import."""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

import io
import os
import signal
import time
import uuid
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from services.donations.imports import spreadsheet
from services.donations.models import ImportJob, Pledge, PledgeLine
from services.donations.models import messaging as donations_messaging
from tests.support.auth import Account, admin, register
from tests.support.stack import Stack, eventually

IMPORTS = "/api/v1/pledges/imports"
ENGLISH_HEADER = "item,quantity,unit,pack_size,best_before,origin_region,origin_address\n"


# Files ----------------------------------------------------------------------------------------


def xlsx(rows: list[list[Any]]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def good_csv(rows: int, *, tag: str = "") -> bytes:
    """``rows`` valid lines of masks, one piece more each, from two origins."""
    lines = [ENGLISH_HEADER]
    for n in range(rows):
        region = "420102" if n % 2 else "440304"
        lines.append(f"mask,{n + 1},piece,,,{region},warehouse {tag}\n")
    return "".join(lines).encode()


def mixed_csv(rows: int) -> tuple[bytes, set[int]]:
    """``rows`` lines, every tenth one unknown; returns the file and its bad row numbers."""
    lines = [ENGLISH_HEADER]
    bad = set()
    for n in range(rows):
        if n % 10 == 9:
            lines.append(f"unobtainium,{n + 1},piece,,,420102,\n")
            bad.add(n + 2)
        else:
            lines.append(f"gloves_exam,{n + 1},pair,,,420102,\n")
    return "".join(lines).encode(), bad


# Calls ----------------------------------------------------------------------------------------


def upload(
    client: Any,
    account: Account,
    content: bytes,
    filename: str = "pledges.csv",
    headers: dict[str, str] | None = None,
    **form: str,
) -> Any:
    # Encoded here, in memory: the test client would spool a large body to a temporary
    # file it never closes.
    boundary, body = encode_multipart(
        {"file": FileStorage(io.BytesIO(content), filename=filename), **form}
    )
    return client.post(
        IMPORTS,
        data=body,
        headers={**account.headers, **(headers or {})},
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def started(client: Any, account: Account, content: bytes, **kwargs: Any) -> dict[str, Any]:
    response = upload(client, account, content, **kwargs)
    assert response.status_code == 202, response.json
    assert response.headers["Location"].endswith(response.json["id"])
    job: dict[str, Any] = response.json
    return job


def job_of(client: Any, account: Account, job_id: str) -> dict[str, Any]:
    response = client.get(f"{IMPORTS}/{job_id}", headers=account.headers)
    assert response.status_code == 200, response.json
    job: dict[str, Any] = response.json
    return job


def finished(client: Any, account: Account, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = job_of(client, account, job_id)
        return job if job["status"] in ("succeeded", "failed") else None

    return eventually(done, timeout=timeout)


def lines_of_job(stack: Stack, job_id: str) -> list[PledgeLine]:
    with stack.runtime("donations").session_factory() as session:
        return list(
            session.scalars(
                select(PledgeLine)
                .join(Pledge, Pledge.id == PledgeLine.pledge_id)
                .where(Pledge.import_job_id == uuid.UUID(job_id))
            )
        )


def pledge_events(stack: Stack) -> list[dict[str, Any]]:
    outbox = donations_messaging.outbox
    with stack.runtime("donations").session_factory() as session:
        rows = session.scalars(select(outbox.message).where(outbox.type == "pledge.created"))
        return [dict(m) for m in rows]


def count_pledges(stack: Stack) -> int:
    with stack.runtime("donations").session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Pledge)) or 0)


# Good files ----------------------------------------------------------------------------------


def test_an_xlsx_with_chinese_headers_imports_in_base_units(stack: Stack) -> None:
    stack.start_worker("donations")
    client = stack.client()
    donor = register(client, kind="foundation")
    other = register(client, kind="company")
    header = ["序号", "物资", "标准", "数量", "单位", "每箱数量", "每瓶容量(毫升)", "保质期至"]
    header += ["发货地区代码", "发货地址", "可发货日期", "限定地区", "限定受助类型", "备注"]
    wuhan_origin = [420102, "武汉市江岸区", date(2020, 2, 10)]
    shenzhen_origin = ["440304", "深圳市福田区", None]
    content = xlsx(
        [
            ["中华慈善基金会捐赠清单"],  # a title above the header
            header,
            [
                1,
                "口罩",
                "GB 19083-2010",
                20,
                "箱",
                50,
                None,
                datetime(2031, 6, 30),
                *wuhan_origin,
                "4201、4202",
                "医院, 养老院",
                None,
            ],
            [
                2,
                "医用外科口罩",
                None,
                1000,
                "只",
                None,
                None,
                None,
                *wuhan_origin,
                None,
                None,
                "仅限一线医护人员",
            ],
            [3, "水果", None, 1.5, "吨", None, None, "2030/2/20", *shenzhen_origin],
            [4, "84消毒液", None, 3, "箱", 10, 500, "2031-01-31", *shenzhen_origin],
        ]
    )
    job = started(
        client, donor, content, filename="捐赠清单.xlsx", headers={"Accept-Language": "zh-CN"}
    )
    assert (job["status"], job["rows_total"], job["mode"]) == ("queued", 4, "all_or_nothing")
    assert job["language"] == "zh" and job["content_type"] == "xlsx"
    assert job["ignored_columns"] == ["序号"]

    done = finished(client, donor, job["id"])
    assert done["status"] == "succeeded", done
    assert (done["rows_done"], done["rows_imported"], done["progress"]) == (4, 4, 1.0)
    assert done["errors"] == [] and done["filename"] == "捐赠清单.xlsx"
    # One pledge per origin and available-from date.
    assert len(done["pledge_ids"]) == 2

    pledges = sorted(
        (
            client.get(f"/api/v1/pledges/{pid}", headers=donor.headers).json
            for pid in done["pledge_ids"]
        ),
        key=lambda p: str(p["origin"]["region"]),
    )
    wuhan, shenzhen = pledges
    assert wuhan["origin"]["region"] == "420102" and wuhan["available_from"] == "2020-02-10"
    assert shenzhen["origin"] == {
        "place_id": None,
        "address": "深圳市福田区",
        "contact": None,
        "region": "440304",
        "lat": None,
        "lon": None,
    }
    assert {p["import_job_id"] for p in pledges} == {job["id"]}
    boxes, loose = wuhan["lines"]
    assert (boxes["item"], boxes["standard"], boxes["quantity"]) == ("mask", "GB19083-2010", 1000)
    assert (boxes["entered_quantity"], boxes["entered_unit"], boxes["pack_size"]) == (
        "20",
        "箱",
        50,
    )
    assert boxes["best_before"] == "2031-06-30"
    assert boxes["restrictions"]["regions"] == ["4201", "4202"]
    assert boxes["restrictions"]["recipient_kinds"] == ["hospital", "care_home"]
    assert (loose["standard"], loose["quantity"]) == ("YY0469-2011", 1000)
    assert loose["restrictions"]["note"] == "仅限一线医护人员"
    fruit, bleach = shenzhen["lines"]
    assert (fruit["item"], fruit["quantity"], fruit["base_unit"]) == ("fruit", 1_500_000, "g")
    assert fruit["best_before"] == "2030-02-20"
    assert (bleach["quantity"], bleach["base_unit"]) == (15_000, "ml")
    assert sorted(e["payload"]["id"] for e in pledge_events(stack)) == sorted(done["pledge_ids"])

    # The same file again: no second job, nothing pledged twice.
    again = upload(client, donor, content, filename="copy.xlsx")
    assert again.status_code == 409, again.json
    assert again.json["job_id"] == job["id"]
    assert again.headers["Location"].endswith(job["id"])
    # Asked in Chinese, the refusal names the job's status in Chinese too.
    again_zh = upload(
        client, donor, content, filename="copy.xlsx", headers={"Accept-Language": "zh-CN"}
    )
    assert again_zh.status_code == 409
    assert "（状态：已完成）" in again_zh.json["detail"], again_zh.json
    assert "succeeded" not in again_zh.json["detail"]
    listed = client.get(IMPORTS, headers=donor.headers).json["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert listed[0]["pledge_ids"] == done["pledge_ids"]
    assert count_pledges(stack) == 2

    # Someone else's import is not there for another donor.
    assert client.get(f"{IMPORTS}/{job['id']}", headers=other.headers).status_code == 404
    assert client.get(IMPORTS, headers=other.headers).json["items"] == []
    # ...but the same file is theirs to import.
    theirs = started(client, other, content)
    assert finished(client, other, theirs["id"])["status"] == "succeeded"
    assert count_pledges(stack) == 4


# Bad rows -------------------------------------------------------------------------------------


BAD_ROWS = (
    ENGLISH_HEADER
    + "mask,100,piece,,,420102,Wuhan\n"  # 2: good
    + "unobtainium,5,piece,,,420102,Wuhan\n"  # 3: unknown item
    + "mask,-3,piece,,,420102,Wuhan\n"  # 4: negative quantity
    + "fruit,10,kg,,2020-02-30,420102,Wuhan\n"  # 5: no such date
    + "mask,10,kg,,,420102,Wuhan\n"  # 6: masks are not weighed
    + "gloves_exam,2,box,50,,420102,Wuhan\n"  # 7: good
    + "fruit,10,kg,,2020-02-20,420102,Wuhan\n"  # 8: past its best-before date
).encode()


def test_bad_rows_are_reported_by_row_and_column_and_nothing_is_written(stack: Stack) -> None:
    stack.start_worker("donations")
    client = stack.client()
    donor = register(client, kind="foundation")

    job = started(client, donor, BAD_ROWS, language="en")
    failed = finished(client, donor, job["id"])
    assert failed["status"] == "failed"
    assert (failed["rows_done"], failed["rows_total"], failed["rows_imported"]) == (7, 7, 0)
    assert failed["pledge_ids"] == []
    assert "5 row(s) have errors" in failed["detail"]
    errors = {(e["row"], e["column"], e["field"]): e["message"] for e in failed["errors"]}
    assert set(errors) == {
        (3, "item", "item"),
        (4, "quantity", "quantity"),
        (5, "best_before", "best_before"),
        (6, "unit", "unit"),
        (8, "best_before", "best_before"),
    }
    assert "unobtainium" in errors[(3, "item", "item")]
    assert "-3" in errors[(4, "quantity", "quantity")]
    assert "2020-02-30" in errors[(5, "best_before", "best_before")]
    assert "piece, box or case" in errors[(6, "unit", "unit")]
    assert "2020-02-20 is already past" in errors[(8, "best_before", "best_before")]
    # All or nothing: not even the good rows.
    assert client.get("/api/v1/pledges", headers=donor.headers).json["items"] == []
    assert count_pledges(stack) == 0
    assert pledge_events(stack) == []

    # The same file, valid rows only: the job that imported nothing runs again.
    again = started(client, donor, BAD_ROWS, mode="valid_rows", language="en")
    assert again["id"] == job["id"] and again["mode"] == "valid_rows"
    done = finished(client, donor, job["id"])
    assert done["status"] == "succeeded", done
    assert (done["rows_done"], done["rows_imported"]) == (7, 2)
    assert {e["row"] for e in done["errors"]} == {3, 4, 5, 6, 8}
    assert sorted(line.quantity for line in lines_of_job(stack, job["id"])) == [100, 100]
    assert len(pledge_events(stack)) == len(done["pledge_ids"]) == 1
    # It has now pledged: the file is not run a third time.
    assert upload(client, donor, BAD_ROWS, mode="valid_rows").status_code == 409

    # Chinese headers in GB18030, messages in Chinese.
    chinese = (
        "物资,数量,单位,发货地区代码\n口罩,10,公斤,420102\n口罩,abc,个,420102\n口罩,5,个,42010\n"
    ).encode("gb18030")
    zh = finished(client, donor, started(client, donor, chinese, language="zh")["id"])
    assert zh["status"] == "failed"
    by_row = {e["row"]: e for e in zh["errors"]}
    assert (by_row[2]["column"], by_row[3]["column"], by_row[4]["column"]) == (
        "单位",
        "数量",
        "发货地区代码",
    )
    assert "不是口罩（mask）的单位" in by_row[2]["message"]
    assert "不是数字" in by_row[3]["message"]
    assert "不是地区代码" in by_row[4]["message"]
    assert "有 3 行存在错误" in zh["detail"]


# Files refused at the door ---------------------------------------------------------------------


def test_uploads_that_cannot_be_imported_are_refused_with_a_problem(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    hospital = register(client, kind="hospital")

    huge = upload(client, donor, b"item,quantity,unit\n" + b"x" * (20 * 1024 * 1024))
    assert huge.status_code == 413, huge.json
    assert huge.mimetype == "application/problem+json"
    assert "10 MB" in huge.json["errors"]["file"][0]

    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000)
    for content, name in ((png, "photo.png"), (os.urandom(5000), "pledges.csv")):
        refused = upload(client, donor, content, filename=name)
        assert refused.status_code == 422, refused.json
        assert refused.json["errors"]["file"], refused.json

    fake_xlsx = upload(client, donor, b"PK\x03\x04" + os.urandom(3000), filename="a.xlsx")
    assert fake_xlsx.status_code == 422
    assert "not a CSV or XLSX" in fake_xlsx.json["errors"]["file"][0]

    missing = upload(client, donor, b"item,how many\nmask,3\n", language="en")
    assert missing.status_code == 422
    assert missing.json["missing_columns"] == ["quantity", "unit", "origin_region"]
    assert "quantity, unit, origin_region" in missing.json["errors"]["file"][0]
    # A default region stands in for the column.
    assert upload(client, donor, b"item,quantity\nmask,3\n", origin_region="4201").json[
        "missing_columns"
    ] == ["unit"]

    too_many = b"item,quantity,unit,origin_region\n" + b"mask,1,piece,4201\n" * 20_001
    refused = upload(client, donor, too_many)
    assert refused.status_code == 422
    assert "20,000" in refused.json["errors"]["file"][0]

    assert upload(client, donor, b"").status_code == 422
    no_file = client.post(
        IMPORTS,
        data={"mode": "valid_rows"},
        headers=donor.headers,
        content_type="multipart/form-data",
    )
    assert no_file.status_code == 422 and "file" in no_file.json["errors"]
    bad_mode = upload(client, donor, good_csv(1), mode="some")
    assert bad_mode.status_code == 422 and "mode" in bad_mode.json["errors"]

    # Who may import.
    assert upload(client, hospital, good_csv(1)).status_code == 403
    anonymous = client.post(
        IMPORTS,
        data={"file": (io.BytesIO(good_csv(1)), "p.csv")},
        content_type="multipart/form-data",
    )
    assert anonymous.status_code == 401
    boss = admin(stack.apps["gateway"], client)
    assert upload(client, boss, good_csv(1)).json["errors"]["org_id"]
    on_behalf = started(client, boss, good_csv(1), org_id=donor.org_id)
    assert on_behalf["org_id"] == donor.org_id
    assert job_of(client, donor, on_behalf["id"])["status"] == "queued"
    assert client.get(IMPORTS, headers=hospital.headers).status_code == 403
    with stack.runtime("donations").session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ImportJob)) == 1


def test_the_template_lists_the_columns_and_the_catalogue(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    response = client.get(f"{IMPORTS}/template.xlsx", headers=donor.headers)
    assert response.status_code == 200
    assert response.mimetype == spreadsheet.XLSX_MIMETYPE
    workbook = openpyxl.load_workbook(io.BytesIO(response.data))
    pledges, items, guide = workbook.worksheets
    header = [cell.value for cell in pledges[1]]
    assert header[0] == "物资 / item" and len(header) == len(spreadsheet.COLUMNS)
    codes = {row[0] for row in items.iter_rows(min_row=2, values_only=True)}
    assert {"mask", "fruit", "disinfectant_84"} <= codes
    assert guide.max_row > len(spreadsheet.COLUMNS)
    english = client.get(f"{IMPORTS}/template.xlsx?language=en", headers=donor.headers)
    first = openpyxl.load_workbook(io.BytesIO(english.data)).worksheets[0]
    assert [cell.value for cell in first[1]][:4] == ["item", "standard", "quantity", "unit"]
    # The template as downloaded reads back; its example row must be deleted first.
    sheet = spreadsheet.read_sheet(response.data)
    row = spreadsheet.RowChecker(sheet, "en").check(*sheet.rows[0])
    assert [e["code"] for e in row.errors] == ["example_row"]
    assert client.get(f"{IMPORTS}/template.xlsx").status_code == 401


# Progress and crashes ------------------------------------------------------------------------


def test_progress_is_visible_while_the_rows_are_checked(stack: Stack, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    stack.start_worker(
        "donations",
        module="tests.support.stalling_import_worker",
        env={
            "AIDLINK_TEST_MARKER_DIR": str(markers),
            "AIDLINK_TEST_IMPORT_STEP": "20",
            "AIDLINK_TEST_IMPORT_DELAY": "0.3",
        },
    )
    client = stack.client()
    donor = register(client, kind="foundation")
    job = started(client, donor, good_csv(200))

    seen: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = job_of(client, donor, job["id"])
        seen.append(state["rows_done"])
        if state["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.05)
    assert state["status"] == "succeeded", state
    assert seen == sorted(seen), "progress never goes back"
    assert len({n for n in seen if 0 < n < 200}) >= 2, seen
    assert (state["rows_done"], state["rows_total"], state["progress"]) == (200, 200, 1.0)
    assert len(lines_of_job(stack, job["id"])) == 200


@pytest.mark.parametrize("mode", ["valid_rows", "all_or_nothing"])
def test_a_worker_killed_mid_import_resumes_without_duplicating_lines(
    stack: Stack, tmp_path: Path, mode: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    worker = stack.start_worker(
        "donations",
        module="tests.support.stalling_import_worker",
        env={
            "AIDLINK_TEST_MARKER_DIR": str(markers),
            "AIDLINK_TEST_IMPORT_STEP": "20",
            "AIDLINK_TEST_IMPORT_STALL_AFTER": "100",
        },
    )
    client = stack.client()
    donor = register(client, kind="foundation")
    if mode == "valid_rows":
        content, bad = mixed_csv(200)
    else:
        content, bad = good_csv(200), set()
    job = started(client, donor, content, mode=mode)
    job_id = job["id"]

    # The first run stalls with 100 rows committed; kill the process running it.
    first = eventually(lambda: sorted(markers.glob(f"{job_id}.1")), timeout=60)
    eventually(lambda: job_of(client, donor, job_id)["rows_done"] >= 100, timeout=60)
    doomed_pid = int(first[0].read_text().split()[0])
    if mode == "valid_rows":
        # Five chunks are in: their lines, and no more.
        assert len(lines_of_job(stack, job_id)) == 90
    else:
        assert lines_of_job(stack, job_id) == []
    os.kill(doomed_pid, signal.SIGKILL)

    # The task is delivered again and runs on a new process.
    second = eventually(lambda: sorted(markers.glob(f"{job_id}.2")), timeout=60)
    pid, resumed_from = (int(x) for x in second[0].read_text().split())
    assert pid != doomed_pid
    # Valid rows resume after the last chunk committed; all or nothing starts over.
    assert resumed_from == (100 if mode == "valid_rows" else 0)

    done = finished(client, donor, job_id)
    assert done["status"] == "succeeded", done
    assert (done["rows_done"], done["rows_imported"]) == (200, 200 - len(bad))
    assert sorted(e["row"] for e in done["errors"]) == sorted(bad)
    lines = lines_of_job(stack, job_id)
    good_quantities = [n + 1 for n in range(200) if n + 2 not in bad]
    assert sorted(line.quantity for line in lines) == good_quantities
    assert sorted(e["payload"]["id"] for e in pledge_events(stack)) == sorted(done["pledge_ids"])
    assert "WorkerLostError" in worker.log() or "signal 9" in worker.log()
    assert not list(markers.glob(f"{job_id}.3"))


# Reading cells -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["2020-02-03", "2020/2/3", "2020.2.3", "2020年2月3日", "20200203", "2020-02-03 00:00:00"],
)
def test_dates_are_read_as_people_write_them(text: str) -> None:
    assert spreadsheet.parse_date(text) == date(2020, 2, 3)


def test_excel_dates_and_headers() -> None:
    assert spreadsheet.parse_date(43864, excel=True) == date(2020, 2, 3)
    assert spreadsheet.parse_date(datetime(2020, 2, 3, 8, 30)) == date(2020, 2, 3)
    for header in ("每瓶容量（毫升）", "Bottle Volume ML", "每瓶容量(毫升) / bottle_volume_ml"):
        assert spreadsheet.field_of_header(header) == "bottle_volume_ml"
    assert spreadsheet.field_of_header("序号") is None
    for header in ("密度(克/升)", "Density (g/l)", "density_g_per_l"):
        assert spreadsheet.field_of_header(header) == "density_g_per_l"


def test_a_liquid_by_mass_needs_its_density_and_converts_exactly() -> None:
    sheet = spreadsheet.read_sheet(
        (
            "物资,数量,单位,密度(克/升),发货地区代码\n"
            "84消毒液,2,吨,1000,420102\n"
            "75%酒精,1,公斤,,420102\n"
            "75%酒精,1,公斤,877,420102\n"
            "口罩,1,个,800,420102\n"
        ).encode()
    )
    checker = spreadsheet.RowChecker(sheet, "en")
    rows = [checker.check(number, cells) for number, cells in sheet.rows]
    assert rows[0].errors == [] and rows[0].line is not None
    assert rows[0].line["density_g_per_l"] == 1000
    assert [e["field"] for e in rows[1].errors] == ["density_g_per_l"]
    assert "grams in a litre" in rows[1].errors[0]["message"]
    # 1 kg at 877 g/l is 1140.25... ml: refused, never rounded.
    assert [e["field"] for e in rows[2].errors] == ["quantity"]
    assert "1140.25" in rows[2].errors[0]["message"]
    assert [e["field"] for e in rows[3].errors] == ["density_g_per_l"]


def test_rows_of_one_origin_make_pledges_of_at_most_500_lines() -> None:
    content = b"item,quantity,unit,origin_region\n" + b"mask,1,piece,4201\n" * 1200
    sheet = spreadsheet.read_sheet(content)
    checker = spreadsheet.RowChecker(sheet, "en")
    groups = spreadsheet.group_rows(checker.check(n, cells) for n, cells in sheet.rows)
    assert [len(g) for g in groups] == [500, 500, 200]


def _openpyxl_rows(content: bytes) -> list[tuple[int, tuple[Any, ...]]]:
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()
        return list(enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1))
    finally:
        workbook.close()


def test_the_xlsx_reader_reads_what_openpyxl_reads() -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["物资", "数量", "保质期至", "bool", "formula", "note"])
    sheet.append(["口罩", 5, date(2020, 2, 3), True, "=1+1", " 带空格 "])
    sheet.append(["水果", 1.5, datetime(2020, 2, 3, 10, 30), False, None, -3])
    sheet["A6"] = "after a gap"
    sheet["H7"] = 1e20
    sheet["C8"] = datetime(1900, 1, 15)
    buffer = io.BytesIO()
    workbook.save(buffer)
    content = buffer.getvalue()

    def filled(rows: Any) -> list[tuple[int, tuple[Any, ...]]]:
        out = []
        for number, cells in rows:
            values = list(cells)
            while values and values[-1] is None:
                values.pop()
            if values:
                out.append((number, tuple(values)))
        return out

    fast = filled(spreadsheet._xlsx_rows(content))
    assert fast == filled(_openpyxl_rows(content))
    assert fast[1] == (2, ("口罩", 5, datetime(2020, 2, 3), True, None, " 带空格 "))


def test_a_workbook_declaring_entities_is_refused() -> None:
    workbook = openpyxl.Workbook()
    buffer = io.BytesIO()
    workbook.save(buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><x>&a;</x>'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, bomb if name == "xl/worksheets/sheet1.xml" else data)
    with pytest.raises(spreadsheet.SheetError) as refused:
        spreadsheet.read_sheet(out.getvalue())
    assert refused.value.code == "xlsx_unreadable"


def test_an_import_whose_task_was_lost_is_queued_again_by_the_sweep(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    donations = stack.runtime("donations")
    # The broker loses the task: nothing is listening yet, and the queue is emptied.
    job = started(client, donor, good_csv(5, tag="lost"))
    donations.celery.control.purge()
    from datetime import timedelta

    from sqlalchemy import update

    from shared.db import utcnow

    with donations.unit_of_work() as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == uuid.UUID(job["id"]))
            .values(created_at=utcnow() - timedelta(minutes=10))
        )
    worker = stack.start_worker("donations")
    donations.celery.send_task("donations.resume_imports", queue="donations")
    done = finished(client, donor, job["id"])
    assert done["status"] == "succeeded"
    assert done["rows_imported"] == 5
    assert "queued 1 stalled import(s) again" in worker.log()
    assert len(lines_of_job(stack, job["id"])) == 5
