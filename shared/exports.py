"""Downloads of many rows (CSV, XLSX, JSON) streamed as they are read, so that memory
stays flat whatever the number of rows: the one way every export is written.

Rows come from an iterator (a query read with ``yield_per``, which is a server-side
cursor on PostgreSQL); CSV and JSON go out in chunks of about ``CHUNK`` bytes as they
are made. XLSX is a zip and cannot be sent before it is finished: openpyxl's write-only
workbook writes each row to a temporary file on disk, and the finished file is sent
from there in chunks.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from flask import Response, stream_with_context

CHUNK = 64 * 1024
# A table of an export: its name, its columns and its rows.
Table = tuple[str, Sequence[str], Iterable[Mapping[str, Any]]]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@functools.lru_cache(maxsize=1024)
def _uuid_text(value: uuid.UUID) -> str:
    # The same organisations, pledges and needs come back row after row.
    return str(value)


def _cell(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int:
        return value
    if value is None:
        return ""
    if kind is uuid.UUID:
        return _uuid_text(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def csv_chunks(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """A header and one line per row, in chunks of about :data:`CHUNK` characters."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
        if buffer.tell() >= CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def json_chunks(
    head: Mapping[str, Any],
    tables: Sequence[tuple[str, Sequence[str], Iterable[Mapping[str, Any]]]],
) -> Iterator[str]:
    """One JSON object: the keys of ``head``, then each table as a list of objects with
    its ``columns``, written a row at a time."""
    out = io.StringIO()
    out.write("{")
    first_key = True
    for key, value in head.items():
        out.write(("" if first_key else ",") + json.dumps(key) + ":" + json.dumps(value))
        first_key = False
    for name, columns, rows in tables:
        out.write(("" if first_key else ",") + json.dumps(name) + ":[")
        first_key = False
        first_row = True
        for row in rows:
            cells = {
                c: (_uuid_text(row[c]) if type(row[c]) is uuid.UUID else row[c]) for c in columns
            }
            out.write(("" if first_row else ",") + json.dumps(cells, default=str))
            first_row = False
            if out.tell() >= CHUNK:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        out.write("]")
    out.write("}")
    yield out.getvalue()


def xlsx_chunks(sheets: Sequence[Table]) -> Iterator[bytes]:
    """A workbook of one sheet per ``(title, columns, rows)``, written row by row with
    openpyxl's write-only workbook, then read back in chunks."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    for title, columns, rows in sheets:
        sheet = workbook.create_sheet(title=title)
        sheet.append(list(columns))
        for row in rows:
            sheet.append([_cell(row[c]) for c in columns])
    with tempfile.TemporaryFile() as done:
        workbook.save(done)
        done.seek(0)
        while chunk := done.read(CHUNK):
            yield chunk


def download(chunks: Iterator[Any], *, mimetype: str, filename: str | None = None) -> Response:
    """A response that sends ``chunks`` as they come, inside the request's context (its
    database session stays open until the last row); a file to save if ``filename``."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}
    return Response(stream_with_context(chunks), mimetype=mimetype, headers=headers)
