"""Pledge spreadsheets: their columns, reading CSV and XLSX files, checking each row
with the same rules as the pledges API, and the downloadable template.

Columns
-------

Headers may be written in English or Chinese, in any case and with any spacing
("Pack Size" is ``pack_size``); a header holding both names, "物资 / item", is
read too. Columns the importer does not know (a 序号 column, say) are ignored.
The first row naming at least two known columns is the header row; rows above it
(a title, say) and blank rows are skipped. Row numbers in errors are the
spreadsheet's own: the first row under a header in row 1 is row 2.

=================  ==================  ========  ==============================================
English            中文                 needed    what it holds
=================  ==================  ========  ==============================================
item               物资                 yes       an item code or name in Chinese or English
                                                  (mask, 口罩, 医用外科口罩, KN95, surgical masks)
standard           标准                 no        the standard the item meets (GB19083-2010,
                                                  YY 0469, KN95); an item name naming one is enough
quantity           数量                 yes       a positive number in ``unit``, e.g. 20 or 1.5
unit               单位                 yes       a unit of the item: 个/pcs, 副, 套, 台, 盒/box,
                                                  箱/case, 瓶/bottle, g, kg/公斤, t/吨, 斤, ml, l/升
pack_size          每箱数量             for box,  base units in a box or case (bottles, for
                                       case      liquids), a whole number
bottle_volume_ml   每瓶容量(毫升)       for       millilitres in each bottle of a liquid
                                       bottles
density_g_per_l    密度(克/升)          for a     grams per litre of a liquid entered by mass
                                       liquid    (kg, t, 斤), as on its label
                                       by mass
best_before        保质期至             no        a date; produce without one keeps for its
                                                  catalogue shelf life
origin_place       发货地点             no        the name of one of the organisation's places
                                                  (its region and address are then the origin's)
origin_region      发货地区代码         yes*      the 2, 4 or 6 digit region code it ships from
origin_address     发货地址             no        the address it ships from
available_from     可发货日期           no        the date it can ship from
regions            限定地区             no        region codes it is restricted to, separated by
                                                  commas, 、 or spaces
recipient_kinds    限定受助类型         no        kinds of recipient it is restricted to: hospital
                                                  医院, field_hospital 方舱医院, community_committee
                                                  社区居委会, civil_affairs_bureau 民政局,
                                                  care_home 养老院
note               备注                 no        a note on the line, e.g. "frontline staff only"
=================  ==================  ========  ==============================================

\\* origin_region may be left out when the upload names a default region, or on rows
naming a place.

Dates may be written 2020-02-03, 2020/2/3, 2020.2.3, 2020年2月3日 or 20200203, or be
Excel date cells. Rows sharing a shipping region, address and available-from date
become one pledge (at most ``MAX_LINES_PER_PLEDGE`` lines each).
"""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from services.donations.pledges.service import LineError, convert_line
from shared import catalog
from shared.catalog import regions
from shared.events.registry import ORGANISATION_KINDS
from shared.places import normalised_name

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
MAX_LINES_PER_PLEDGE = 500
# A workbook is a zip; more than this unpacked is refused rather than read.
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
LANGUAGES = ("zh", "en")
# How many rows from the top the header row is looked for in.
HEADER_SEARCH_ROWS = 10

XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The template's example row carries this note; a row still carrying it is refused.
EXAMPLE_NOTE = "示例行，导入前请删除 / Example row: delete it before importing"

_REGION = re.compile(r"^\d{2}(\d{2}){0,2}$")
_LIST_SEPARATORS = re.compile(r"[,，;；、\s]+")
_HEADER_NOISE = re.compile(r"[\s_\-*]+")
_DATE = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
)
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Columns ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    field: str
    en: str
    zh: str
    required: bool
    help_en: str
    help_zh: str
    aliases: tuple[str, ...] = ()

    def label(self, language: str) -> str:
        return self.zh if language == "zh" else self.en


COLUMNS: tuple[Column, ...] = (
    Column(
        "item",
        "item",
        "物资",
        True,
        "Item code or name in Chinese or English: mask, 口罩, 医用外科口罩, KN95",
        "物资编码或中英文名称，如 mask、口罩、医用外科口罩、KN95",
        ("item name", "item code", "物资名称", "品名", "名称"),
    ),
    Column(
        "standard",
        "standard",
        "标准",
        False,
        "Standard the item meets, e.g. GB19083-2010; optional",
        "执行标准，如 GB19083-2010；可不填",
        ("执行标准",),
    ),
    Column(
        "quantity",
        "quantity",
        "数量",
        True,
        "A positive number in the unit, e.g. 20 or 1.5",
        "按所填单位计的正数，如 20 或 1.5",
        ("qty", "amount"),
    ),
    Column(
        "unit",
        "unit",
        "单位",
        True,
        "个/pcs, 副, 套, 台, 盒/box, 箱/case, 瓶/bottle, g, kg/公斤, t/吨, 斤, ml, l/升",
        "个、副、套、台、盒、箱、瓶、克、公斤、吨、斤、毫升、升",
        ("units",),
    ),
    Column(
        "pack_size",
        "pack_size",
        "每箱数量",
        False,
        "For a box or case: base units in it (bottles, for liquids)",
        "单位为盒或箱时必填：每盒/箱内的基本单位数（液体为瓶数）",
        ("pack size", "每盒数量", "每件数量", "装箱数"),
    ),
    Column(
        "bottle_volume_ml",
        "bottle_volume_ml",
        "每瓶容量(毫升)",
        False,
        "For liquids in bottles: millilitres in each bottle",
        "液体按瓶、盒或箱计时必填：每瓶毫升数",
        ("bottle volume", "bottle volume (ml)", "每瓶容量", "每瓶毫升"),
    ),
    Column(
        "density_g_per_l",
        "density_g_per_l",
        "密度(克/升)",
        False,
        "For a liquid entered by mass (kg, t): grams per litre, as on its label",
        "液体按重量（公斤、吨、斤）计时必填：每升克数，以标签为准",
        ("density", "density (g/l)", "密度", "密度(g/l)", "每升克数"),
    ),
    Column(
        "best_before",
        "best_before",
        "保质期至",
        False,
        "Date, e.g. 2020-02-03 or 2020/2/3",
        "日期，如 2020-02-03 或 2020/2/3",
        ("best before", "expiry", "expiry date", "有效期至", "保质期"),
    ),
    Column(
        "origin_region",
        "origin_region",
        "发货地区代码",
        True,
        "2, 4 or 6 digit region code it ships from, e.g. 420102 (or a default with the upload)",
        "发货地 2、4 或 6 位行政区划代码，如 420102（或上传时填写默认值）",
        ("origin region", "region", "发货地区", "发货地区编码"),
    ),
    Column(
        "origin_place",
        "origin_place",
        "发货地点",
        False,
        "Name of one of the organisation's places it ships from (its address and region "
        "are then the origin's)",
        "机构已登记的发货地点名称（发货地址和地区代码随之确定）",
        ("place", "origin place", "warehouse", "地点", "仓库", "发货仓库"),
    ),
    Column(
        "origin_address",
        "origin_address",
        "发货地址",
        False,
        "Address it ships from",
        "发货详细地址",
        ("origin address", "address", "地址"),
    ),
    Column(
        "available_from",
        "available_from",
        "可发货日期",
        False,
        "Date it can ship from",
        "可发货日期",
        ("available from", "ship from"),
    ),
    Column(
        "regions",
        "regions",
        "限定地区",
        False,
        "Region codes it is restricted to, separated by commas",
        "限定受赠地区代码，用逗号或顿号分隔",
        ("restricted regions", "限定地区代码"),
    ),
    Column(
        "recipient_kinds",
        "recipient_kinds",
        "限定受助类型",
        False,
        "hospital, field_hospital, community_committee, civil_affairs_bureau, care_home",
        "医院、方舱医院、社区居委会、民政局、养老院，用逗号或顿号分隔",
        ("recipient kinds", "限定受赠类型", "限定受助机构类型"),
    ),
    Column(
        "note",
        "note",
        "备注",
        False,
        'A note on the line, e.g. "frontline medical staff only"',
        "备注，如“仅限一线医护人员”",
        ("notes", "remark", "remarks", "说明"),
    ),
)
COLUMN_BY_FIELD = {c.field: c for c in COLUMNS}
# Needed in every file, unless the upload gives a default for them (origin_region).
REQUIRED_FIELDS = tuple(c.field for c in COLUMNS if c.required)

# Recipient kinds as people write them in Chinese.
KIND_NAMES_ZH = {
    "hospital": "医院",
    "field_hospital": "方舱医院",
    "community_committee": "社区居委会",
    "civil_affairs_bureau": "民政局",
    "care_home": "养老院",
}
_KIND_ALIASES = {
    **{name: code for code, name in KIND_NAMES_ZH.items()},
    "社区": "community_committee",
    "居委会": "community_committee",
    "敬老院": "care_home",
}


def header_key(text: str) -> str:
    return _HEADER_NOISE.sub("", unicodedata.normalize("NFKC", text).casefold())


_HEADER_INDEX: dict[str, str] = {}
for _column in COLUMNS:
    for _spelling in (_column.field, _column.en, _column.zh, *_column.aliases):
        _HEADER_INDEX[header_key(_spelling)] = _column.field


def field_of_header(text: Any) -> str | None:
    """The field a header cell names: "数量", "Quantity", "数量 / quantity"."""
    if not isinstance(text, str) or not text.strip():
        return None
    found = _HEADER_INDEX.get(header_key(text))
    if found is not None:
        return found
    parts = {_HEADER_INDEX.get(header_key(part)) for part in text.split("/") if part.strip()}
    if len(parts) == 1:
        return parts.pop()
    return None


# Messages ---------------------------------------------------------------------------------

MESSAGES: dict[str, dict[str, str]] = {
    # The file as a whole.
    "file_empty": {"en": "The file is empty.", "zh": "文件为空。"},
    "file_too_large": {
        "en": "The file is {size} MB; at most {limit} MB can be imported at once.",
        "zh": "文件大小为 {size} MB，单次导入不能超过 {limit} MB。",
    },
    "not_spreadsheet": {
        "en": "The file is not a CSV or XLSX spreadsheet.",
        "zh": "该文件不是 CSV 或 XLSX 表格。",
    },
    "xls_format": {
        "en": "Old Excel .xls files are not read: save it as .xlsx or CSV and upload that.",
        "zh": "不支持旧版 Excel（.xls）文件，请另存为 .xlsx 或 CSV 后上传。",
    },
    "csv_encoding": {
        "en": "The CSV file is neither UTF-8 nor GB18030 (GBK) text.",
        "zh": "CSV 文件的编码既不是 UTF-8 也不是 GB18030（GBK）。",
    },
    "xlsx_unreadable": {
        "en": "The XLSX file cannot be read: {reason}.",
        "zh": "无法读取该 XLSX 文件：{reason}。",
    },
    "xlsx_too_large": {
        "en": "The workbook unpacks to more than {limit} MB.",
        "zh": "该工作簿解压后超过 {limit} MB。",
    },
    "no_header": {
        "en": "The file has no header row naming its columns.",
        "zh": "文件中没有列名（表头）行。",
    },
    "missing_columns": {
        "en": "Columns missing: {columns}. Download the template to see the columns.",
        "zh": "缺少以下列：{columns}。请下载模板查看所需列。",
    },
    "duplicate_column": {
        "en": "The columns {first} and {second} both hold {field}.",
        "zh": "“{first}”和“{second}”两列重复，均表示 {field}。",
    },
    "no_known_columns": {
        "en": "The file's first rows name none of the template's columns (item, quantity, "
        "unit, ...); download the template to see them.",
        "zh": "文件前几行中没有模板中的列名（物资、数量、单位等），请下载模板查看。",
    },
    "no_rows": {
        "en": "The file has a header but no rows to import.",
        "zh": "文件只有表头，没有可导入的数据行。",
    },
    "too_many_rows": {
        "en": "The file has more than {limit} rows; split it into several files.",
        "zh": "文件超过 {limit} 行，请拆分为多个文件后导入。",
    },
    # One cell.
    "required": {"en": "{column} is required.", "zh": "“{column}”不能为空。"},
    "item_unknown": {
        "en": "No item in the catalogue is called {value!r}; the second sheet of the "
        "template lists the items.",
        "zh": "物资目录中没有“{value}”，请参考模板第二页的物资列表。",
    },
    "unit_unknown": {
        "en": "Unknown unit {value!r}; {item} is entered in {units}.",
        "zh": "无法识别的单位“{value}”；{item}可用的单位：{units}。",
    },
    "unit_not_for_item": {
        "en": "{value!r} is not a unit for {item}; use {units}.",
        "zh": "“{value}”不是{item}的单位，请使用：{units}。",
    },
    "quantity_not_number": {
        "en": "{value!r} is not a number; write e.g. 20 or 1.5.",
        "zh": "“{value}”不是数字，请填写如 20 或 1.5。",
    },
    "quantity_not_positive": {
        "en": "The quantity must be more than 0, not {value}.",
        "zh": "数量必须大于 0，不能是 {value}。",
    },
    "whole_number": {
        "en": "{column} must be a whole number from 1 to {high}, not {value!r}.",
        "zh": "“{column}”必须是 1 到 {high} 之间的整数，不能是“{value}”。",
    },
    "pack_size_needed": {
        "en": "A {unit} of {item} needs {column}: the number of {base}s in it.",
        "zh": "{item}按{unit}计时须填写“{column}”：每{unit}内的{base}数。",
    },
    "density_needed": {
        "en": "{item} entered in {unit} needs {column}: the grams in a litre, as on its label.",
        "zh": "{item}按{unit}计时须填写“{column}”：每升克数，以标签为准。",
    },
    "bottle_volume_needed": {
        "en": "A {unit} of {item} needs {column}: the millilitres in each bottle.",
        "zh": "{item}按{unit}计时须填写“{column}”：每瓶的毫升数。",
    },
    "date_invalid": {
        "en": "{value!r} is not a date; write e.g. 2020-02-03 or 2020/2/3.",
        "zh": "“{value}”不是有效日期，请填写如 2020-02-03 或 2020/2/3。",
    },
    "region_invalid": {
        "en": "{value!r} is not a region code; use 2, 4 or 6 digits, e.g. 420102.",
        "zh": "“{value}”不是地区代码，请填写 2、4 或 6 位数字，如 420102。",
    },
    "region_unknown": {
        "en": "{column}: {value} is not a region code of GB/T 2260 (province, city or county).",
        "zh": "“{column}”：{value} 不是国家标准 GB/T 2260 中的行政区划代码（省、市或区县）。",
    },
    "place_unknown": {
        "en": "{column}: the organisation has no place named {value}.",
        "zh": "“{column}”：本机构没有名为“{value}”的地点。",
    },
    "place_and_address": {
        "en": "{column}: a named place brings its own region and address; leave those blank.",
        "zh": "“{column}”：已填写发货地点，其地区代码和地址随之确定，请留空。",
    },
    "origin_needed": {
        "en": "{column} is required (or give a default region with the upload).",
        "zh": "“{column}”不能为空（或在上传时填写默认发货地区）。",
    },
    "kind_unknown": {
        "en": "{value!r} is not a kind of recipient; use {kinds}.",
        "zh": "“{value}”不是受助机构类型，请使用：{kinds}。",
    },
    "too_long": {
        "en": "{column} is longer than {limit} characters.",
        "zh": "“{column}”超过 {limit} 个字符。",
    },
    "standard_conflict": {
        "en": "The item {named!r} names the standard {implied}, but {column} says {given}.",
        "zh": "物资“{named}”对应标准 {implied}，与“{column}”中的 {given} 不一致。",
    },
    "example_row": {
        "en": "This is the template's example row; delete it before importing.",
        "zh": "这是模板中的示例行，请在导入前删除。",
    },
    # The catalogue's own words (English), for what the checks above do not name.
    "catalogue": {"en": "{message}", "zh": "“{column}”有误：{message}"},
    "best_before_past": {
        "en": "The best-before date {value} is already past: nobody could use these goods.",
        "zh": "“{column}”{value} 已过期，这批物资无法再使用。",
    },
    # The job as a whole.
    "imported": {
        "en": "{rows} rows imported into {pledges} pledge(s).",
        "zh": "已导入 {rows} 行，生成 {pledges} 份认捐。",
    },
    "rejected_all_or_nothing": {
        "en": "{rows} row(s) have errors, so nothing was imported; correct them and upload "
        "the file again, or import the valid rows only.",
        "zh": "有 {rows} 行存在错误，因此未导入任何数据；请修改后重新上传，或选择只导入正确的行。",
    },
    "imported_valid_rows": {
        "en": "{rows} rows imported into {pledges} pledge(s); {rejected} row(s) with errors "
        "were skipped.",
        "zh": "已导入 {rows} 行，生成 {pledges} 份认捐；跳过了 {rejected} 行有错误的数据。",
    },
    "nothing_valid": {
        "en": "No row could be imported: every row has errors.",
        "zh": "所有行均有错误，未导入任何数据。",
    },
    "errors_truncated": {
        "en": "Only the first {limit} errors are listed.",
        "zh": "仅列出前 {limit} 条错误。",
    },
    "internal_error": {
        "en": "The import stopped on an unexpected error, which has been logged; nothing "
        "more will be imported from this file.",
        "zh": "导入因意外错误中止（已记录日志），该文件不会再继续导入。",
    },
    "duplicate_file": {
        "en": "This file was uploaded before as import {job} ({status}); it is not pledged twice.",
        "zh": "该文件此前已上传为导入任务 {job}（状态：{status}），不会重复认捐。",
    },
    "timed_out": {
        "en": "The import took too long and was stopped; split the file and try again.",
        "zh": "导入超时已中止，请拆分文件后重试。",
    },
}


# An import job's statuses as the Chinese messages name them.
JOB_STATUSES_ZH = {
    "queued": "排队中",
    "running": "进行中",
    "succeeded": "已完成",
    "failed": "失败",
}


def message(code: str, language: str, **params: Any) -> str:
    texts = MESSAGES[code]
    if language == "zh" and "status" in params:
        params["status"] = JOB_STATUSES_ZH.get(str(params["status"]), params["status"])
    return texts.get(language, texts["en"]).format(**params)


def language_of(value: str | None) -> str:
    return value if value in LANGUAGES else "en"


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}".rstrip("0").rstrip(".")


class SheetError(ValueError):
    """A file that cannot be imported as a whole; ``code`` picks its message and
    ``status`` the HTTP answer (413 too large, else 422)."""

    def __init__(self, code: str, status: int = 422, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.params = params

    def message(self, language: str) -> str:
        return message(self.code, language, **self.params)


def _describe_item(item: catalog.Item, language: str) -> str:
    return f"{item.names.zh}（{item.code}）" if language == "zh" else describe_item(item)


def describe_item(item: catalog.Item) -> str:
    return f"{item.names.en} ({item.code})"


def _unit_list(item: catalog.Item, language: str) -> str:
    if language == "zh":
        return "、".join(f"{catalog.get_unit(u).names.zh}({u})" for u in item.units)
    codes = list(item.units)
    return codes[0] if len(codes) == 1 else f"{', '.join(codes[:-1])} or {codes[-1]}"


def _unit_name(code: str, language: str) -> str:
    unit = catalog.get_unit(code)
    return unit.names.zh if language == "zh" else unit.code


# Reading files ------------------------------------------------------------------------------


@dataclass
class Sheet:
    """The rows of a spreadsheet under its header row.

    ``headers`` maps each field to its header as written in the file; ``index`` to its
    column; ``rows`` are the non-blank rows under the header with their row numbers.
    """

    kind: str
    headers: dict[str, str]
    index: dict[str, int]
    ignored: list[str]
    rows: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)

    def missing(self, defaults: dict[str, Any]) -> list[str]:
        return [
            name
            for name in REQUIRED_FIELDS
            if name not in self.index
            and not (name == "origin_region" and defaults.get("origin_region"))
            and not (name == "origin_region" and "origin_place" in self.index)
        ]

    def column(self, name: str, language: str) -> str:
        """The header of ``name`` as in the file, or as the template names it."""
        return self.headers.get(name) or COLUMN_BY_FIELD[name].label(language)


def sniff(content: bytes) -> str:
    """ "csv" or "xlsx", by content; SheetError if it is neither."""
    if not content:
        raise SheetError("file_empty")
    if content.startswith(b"PK\x03\x04"):
        return "xlsx"
    if content.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise SheetError("xls_format")
    if b"\x00" in content:
        raise SheetError("not_spreadsheet")
    return "csv"


def read_sheet(content: bytes, *, max_rows: int = MAX_ROWS) -> Sheet:
    """The header and rows of a CSV or XLSX file (its first worksheet).

    Raises SheetError for a file that is too large, not a spreadsheet, unreadable, has
    no header row, a column twice, no rows or more than ``max_rows`` rows.
    """
    if len(content) > MAX_FILE_BYTES:
        raise SheetError("file_too_large", 413, size=_mb(len(content)), limit=_mb(MAX_FILE_BYTES))
    kind = sniff(content)
    rows = _xlsx_rows(content) if kind == "xlsx" else _csv_rows(content)
    return _table(kind, rows, max_rows)


def _decode(content: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = content.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _CONTROL.search(text):
            # Binary data that happens to decode: not a CSV file.
            raise SheetError("not_spreadsheet")
        return text
    raise SheetError("csv_encoding")


def _csv_rows(content: bytes) -> Iterator[tuple[int, tuple[Any, ...]]]:
    text = _decode(content)
    top = text.splitlines()[:HEADER_SEARCH_ROWS]
    delimiter = max(
        (",", "\t", ";"),
        key=lambda d: (
            max(
                (sum(field_of_header(c) is not None for c in line.split(d)) for line in top),
                default=0,
            ),
            sum(line.count(d) for line in top),
        ),
    )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for number, record in enumerate(reader, start=1):
            yield number, tuple(record)
    except csv.Error as exc:
        raise SheetError("not_spreadsheet") from exc


def _xlsx_rows(content: bytes) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """The rows of the first worksheet, read by calamine (python-calamine): shared and
    inline strings, numbers, booleans, formula results, and dates by their number
    format, in either of Excel's calendars."""
    from python_calamine import CalamineWorkbook

    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise SheetError("not_spreadsheet") from exc
    with archive:
        names = set(archive.namelist())
        if "xl/workbook.xml" not in names:
            raise SheetError("not_spreadsheet")
        # A workbook is a zip: refuse what would unpack to more than the limit before
        # anything is unpacked.
        if sum(info.file_size for info in archive.infolist()) > MAX_UNPACKED_BYTES:
            raise SheetError("xlsx_too_large", limit=_mb(MAX_UNPACKED_BYTES))
        # No spreadsheet program writes a document type declaration; one that declares
        # entities is refused rather than handed to any XML reader.
        for name in names:
            if name.endswith((".xml", ".rels")):
                with archive.open(name) as part:
                    if b"<!DOCTYPE" in part.read(4096).upper():
                        raise SheetError("xlsx_unreadable", reason="document type declaration")
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(content))
        if not workbook.sheet_names:
            raise SheetError("xlsx_unreadable", reason="no worksheet")
        rows = workbook.get_sheet_by_index(0).to_python(skip_empty_area=False)
    except SheetError:
        raise
    except Exception as exc:
        raise SheetError("xlsx_unreadable", reason=type(exc).__name__) from exc
    for number, cells in enumerate(rows, start=1):
        values = [_cell_value(cell) for cell in cells]
        while values and values[-1] is None:
            values.pop()
        yield number, tuple(values)


def _cell_value(cell: Any) -> Any:
    """A cell as the checks take it: None for an empty cell, a whole number as an int
    (a workbook stores every number as a float), a date as a datetime at midnight."""
    if isinstance(cell, str) and cell == "":
        return None
    if isinstance(cell, float) and cell.is_integer() and abs(cell) < 2**53:
        return int(cell)
    if isinstance(cell, date) and not isinstance(cell, datetime):
        return datetime.combine(cell, time())
    return cell


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _table(kind: str, rows: Iterable[tuple[int, tuple[Any, ...]]], max_rows: int) -> Sheet:
    stream = ((n, cells) for n, cells in rows if not all(_blank(c) for c in cells))
    # The header is the first of the first few rows to name two known columns (a title
    # may stand above it), else the first row, so that what is missing can be named.
    leading: list[tuple[int, tuple[Any, ...]]] = []
    header_at = None
    for number, cells in stream:
        leading.append((number, cells))
        if sum(field_of_header(c) is not None for c in cells) >= 2:
            header_at = len(leading) - 1
            break
        if len(leading) >= HEADER_SEARCH_ROWS:
            break
    if not leading:
        raise SheetError("no_header")
    if header_at is None:
        header_at = 0
    header_cells = leading[header_at][1]
    sheet = _header(kind, header_cells, [field_of_header(c) for c in header_cells])
    if not sheet.index:
        raise SheetError("no_known_columns")
    for number, cells in itertools.chain(leading[header_at + 1 :], stream):
        if _repeats_header(sheet, cells):
            continue
        if len(sheet.rows) >= max_rows:
            raise SheetError("too_many_rows", limit=f"{max_rows:,}")
        sheet.rows.append((number, cells))
    if not sheet.rows:
        raise SheetError("no_rows")
    return sheet


def _header(kind: str, cells: Sequence[Any], fields: list[str | None]) -> Sheet:
    headers: dict[str, str] = {}
    index: dict[str, int] = {}
    ignored: list[str] = []
    for position, (cell, name) in enumerate(zip(cells, fields, strict=True)):
        if name is None:
            if not _blank(cell):
                ignored.append(str(cell).strip())
            continue
        if name in index:
            raise SheetError(
                "duplicate_column", first=headers[name], second=str(cell).strip(), field=name
            )
        headers[name] = str(cell).strip()
        index[name] = position
    return Sheet(kind=kind, headers=headers, index=index, ignored=ignored)


def _repeats_header(sheet: Sheet, cells: Sequence[Any]) -> bool:
    """A second header row (the other language's names, say): each known column's
    cell names that column's field. A data row fails at its first filled cell."""
    matched = 0
    for name, position in sheet.index.items():
        cell = cells[position] if position < len(cells) else None
        if _blank(cell):
            continue
        if field_of_header(cell) != name:
            return False
        matched += 1
    return matched >= 2


# Checking rows ----------------------------------------------------------------------------


@dataclass
class CheckedRow:
    """One row: the pledge line it makes and where it ships from, or its errors."""

    number: int
    line: dict[str, Any] | None
    region: str | None = None
    address: str | None = None
    available_from: date | None = None
    place_id: Any = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def origin(self) -> tuple[Any, str | None, str | None, date | None]:
        return (self.place_id, self.region, self.address, self.available_from)


class _Cell(ValueError):
    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    return unicodedata.normalize("NFC", str(value)).strip()


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _Cell("quantity_not_number", value=str(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _fail_number(value)
        # Excel holds numbers as binary floats and shows them to 15 significant digits:
        # what it shows (0.3, not 0.30000000000000004) is what the donor meant.
        return Decimal(f"{value:.15g}")
    if isinstance(value, Decimal):
        return value
    text = _text(value)
    try:
        return catalog.parse_quantity(text)
    except catalog.CatalogError:
        return _fail_number(text)


def _fail_number(value: Any) -> Decimal:
    raise _Cell("quantity_not_number", value=_text(value))


def _quantity(value: Any) -> Decimal:
    number = _decimal(value)
    if number <= 0:
        raise _Cell("quantity_not_positive", value=_text(value))
    if number == number.to_integral_value() and number.as_tuple().exponent != 0:
        number = number.quantize(Decimal(1))
    return number


def _whole(value: Any, *, high: int = 1_000_000) -> int:
    try:
        number = _decimal(value)
    except _Cell:
        number = Decimal("NaN")
    if not number.is_finite() or number != number.to_integral_value() or not 1 <= number <= high:
        raise _Cell("whole_number", value=_text(value), high=f"{high:,}")
    return int(number)


def parse_date(value: Any, *, excel: bool = False) -> date:
    """A date from a cell: a date or datetime, a text date (2020-02-03, 2020/2/3,
    2020.2.3, 2020年2月3日, 20200203) or, from a workbook, an Excel day number."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if excel and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, int) and _COMPACT_DATE.fullmatch(str(value)):
            return parse_date(str(value))
        if 1 <= value < 2958466:
            from openpyxl.utils.datetime import from_excel

            converted = from_excel(value)
            if isinstance(converted, datetime):
                return converted.date()
        raise _Cell("date_invalid", value=_text(value))
    text = unicodedata.normalize("NFKC", _text(value))
    found = _DATE.fullmatch(text) or _COMPACT_DATE.fullmatch(text)
    if found is not None:
        year, month, day = (int(g) for g in found.groups())
        if 1900 <= year <= 2999:
            try:
                return date(year, month, day)
            except ValueError:
                pass
    raise _Cell("date_invalid", value=_text(value))


def _region(value: Any) -> str:
    text = unicodedata.normalize("NFKC", _text(value))
    if not _REGION.fullmatch(text):
        raise _Cell("region_invalid", value=_text(value))
    if not regions.known(text):
        raise _Cell("region_unknown", value=text)
    return text


def _split(value: Any) -> list[str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [_text(value)]
    return [part for part in _LIST_SEPARATORS.split(_text(value)) if part]


def _kind(text: str, language: str) -> str:
    key = unicodedata.normalize("NFKC", text).strip()
    code = _KIND_ALIASES.get(key) or key.casefold().replace(" ", "_").replace("-", "_")
    if code not in ORGANISATION_KINDS:
        kinds = (
            "、".join(f"{name}({code})" for code, name in KIND_NAMES_ZH.items())
            if language == "zh"
            else ", ".join(KIND_NAMES_ZH)
        )
        raise _Cell("kind_unknown", value=text, kinds=kinds)
    return code


def _limited(value: Any, limit: int) -> str:
    text = _text(value)
    if len(text) > limit:
        raise _Cell("too_long", limit=limit)
    return text


class RowChecker:
    """Checks rows of one sheet against the catalogue and the pledges API's rules,
    with messages in ``language``."""

    def __init__(
        self,
        sheet: Sheet,
        language: str,
        defaults: dict[str, Any] | None = None,
        places: dict[str, tuple[Any, str, str]] | None = None,
    ):
        self.sheet = sheet
        self.language = language_of(language)
        self.defaults = defaults or {}
        # The organisation's places by normalised name: (id, region, address).
        self.places = places or {}
        self.excel = sheet.kind == "xlsx"

    def check(self, number: int, cells: Sequence[Any]) -> CheckedRow:
        row = CheckedRow(number=number, line=None)
        index = self.sheet.index
        values: dict[str, Any] = {}
        for name, position in index.items():
            value = cells[position] if position < len(cells) else None
            values[name] = None if _blank(value) else value

        def error(name: str, code: str, **params: Any) -> None:
            column = self.sheet.column(name, self.language)
            row.errors.append(
                {
                    "row": number,
                    "column": column,
                    "field": name,
                    "code": code,
                    "message": message(code, self.language, column=column, **params),
                }
            )

        def take(name: str, parse: Any) -> Any:
            value = values.get(name)
            if value is None:
                return None
            try:
                return parse(value)
            except _Cell as exc:
                error(name, exc.code, **exc.params)
                return None

        if values.get("note") is not None and _text(values["note"]) == EXAMPLE_NOTE:
            error("note", "example_row")
            return row

        item: catalog.Item | None = None
        named_standard: catalog.Standard | None = None
        item_text = values.get("item")
        if item_text is None:
            error("item", "required")
        else:
            try:
                item, named_standard = catalog.resolve(_text(item_text))
            except catalog.CatalogError:
                error("item", "item_unknown", value=_text(item_text))

        standard = named_standard.code if named_standard else None
        if values.get("standard") is not None and item is not None:
            given = _text(values["standard"])
            try:
                checked = catalog.check_standard(item.code, given)
            except catalog.CatalogError as exc:
                error("standard", "catalogue", message=exc.message)
            else:
                if named_standard is not None and checked.code != named_standard.code:
                    error(
                        "standard",
                        "standard_conflict",
                        named=_text(item_text),
                        implied=named_standard.code,
                        given=checked.code,
                    )
                standard = checked.code

        quantity = None
        if values.get("quantity") is None:
            error("quantity", "required")
        else:
            quantity = take("quantity", _quantity)
            if quantity is not None and len(str(quantity)) > 32:
                error("quantity", "too_long", limit=32)
                quantity = None

        unit_text = None
        unit_code = None
        if values.get("unit") is None:
            error("unit", "required")
        else:
            unit_text = _text(values["unit"])
            if item is not None:
                try:
                    unit_code = catalog.normalise_unit(unit_text, item.code)
                except catalog.CatalogError:
                    error(
                        "unit",
                        "unit_unknown",
                        value=unit_text,
                        item=_describe_item(item, self.language),
                        units=_unit_list(item, self.language),
                    )
                else:
                    if unit_code not in item.units:
                        error(
                            "unit",
                            "unit_not_for_item",
                            value=unit_text,
                            item=_describe_item(item, self.language),
                            units=_unit_list(item, self.language),
                        )
                        unit_code = None

        pack_size = take("pack_size", _whole)
        bottle_volume = take("bottle_volume_ml", _whole)
        density = take("density_g_per_l", lambda v: _whole(v, high=100_000))
        if item is not None and unit_code is not None:
            base_kind = catalog.get_unit(item.base_unit).kind
            if unit_code in ("box", "case") and values.get("pack_size") is None:
                error(
                    "pack_size",
                    "pack_size_needed",
                    unit=_unit_name(unit_code, self.language),
                    item=_describe_item(item, self.language),
                    base=(
                        _unit_name("bottle", self.language)
                        if base_kind == "volume"
                        else _unit_name(item.base_unit, self.language)
                    ),
                )
            takes_volume = unit_code == "bottle" or (
                unit_code in ("box", "case") and base_kind == "volume"
            )
            if takes_volume and values.get("bottle_volume_ml") is None:
                error(
                    "bottle_volume_ml",
                    "bottle_volume_needed",
                    unit=_unit_name(unit_code, self.language),
                    item=_describe_item(item, self.language),
                )
            by_mass = catalog.get_unit(unit_code).kind == "mass" and base_kind == "volume"
            if by_mass and values.get("density_g_per_l") is None:
                error(
                    "density_g_per_l",
                    "density_needed",
                    unit=_unit_name(unit_code, self.language),
                    item=_describe_item(item, self.language),
                )

        best_before = take("best_before", lambda v: parse_date(v, excel=self.excel))
        row.available_from = take("available_from", lambda v: parse_date(v, excel=self.excel))

        region = take("origin_region", _region)
        address = take("origin_address", lambda v: _limited(v, 500))
        place_name = take("origin_place", lambda v: _limited(v, 100))
        if place_name is not None:
            found = self.places.get(normalised_name(place_name))
            if found is None:
                error("origin_place", "place_unknown", value=place_name)
            elif values.get("origin_region") is not None or values.get("origin_address"):
                error("origin_place", "place_and_address")
            else:
                row.place_id, region, address = found
                row.region, row.address = region, address
        elif values.get("origin_region") is None:
            region = self.defaults.get("origin_region")
            if region is None:
                error("origin_region", "origin_needed")
            elif address is None:
                address = self.defaults.get("origin_address")
        row.region, row.address = region, address

        regions = take("regions", lambda v: [_region(part) for part in _split(v)])
        kinds = take("recipient_kinds", lambda v: [_kind(p, self.language) for p in _split(v)])
        note = take("note", lambda v: _limited(v, 500))

        if row.errors:
            return row
        assert item is not None and quantity is not None and unit_text is not None
        line = {
            "item": item.code,
            "standard": standard,
            "quantity": quantity,
            # As the donor wrote it, if it fits the column; else the unit's code.
            "unit": unit_text if len(unit_text) <= 16 else unit_code,
            "pack_size": pack_size,
            "bottle_volume_ml": bottle_volume,
            "density_g_per_l": density,
            "best_before": best_before,
            "restrictions": {
                "regions": regions or [],
                "recipient_kinds": kinds or [],
                "note": note,
            },
        }
        try:
            # The API's own rules, so a line imported is a line the API would take.
            convert_line(line)
        except LineError as exc:
            if exc.field == "best_before" and best_before is not None:
                error("best_before", "best_before_past", value=best_before.isoformat())
                return row
            name = exc.field if exc.field in COLUMN_BY_FIELD else "item"
            error(name, "catalogue", message=exc.message)
            return row
        row.line = line
        return row


def group_rows(rows: Iterable[CheckedRow]) -> list[list[CheckedRow]]:
    """Valid rows in pledges: one per shipping origin and available-from date, in
    the order they first appear, at most ``MAX_LINES_PER_PLEDGE`` lines each."""
    groups: dict[tuple[Any, ...], list[list[CheckedRow]]] = {}
    for row in rows:
        if row.line is None:
            continue
        batches = groups.setdefault(row.origin, [[]])
        if len(batches[-1]) >= MAX_LINES_PER_PLEDGE:
            batches.append([])
        batches[-1].append(row)
    return [batch for batches in groups.values() for batch in batches]


# The template -------------------------------------------------------------------------------


def _header_label(column: Column, language: str) -> str:
    if language == "zh":
        return column.zh
    if language == "en":
        return column.en
    return f"{column.zh} / {column.en}"


EXAMPLE_ROW: dict[str, Any] = {
    "item": "医用外科口罩",
    "standard": "YY0469-2011",
    "quantity": 20,
    "unit": "箱",
    "pack_size": 50,
    "bottle_volume_ml": None,
    "density_g_per_l": None,
    "best_before": date(2022, 12, 31),
    "origin_place": None,
    "origin_region": "440304",
    "origin_address": "深圳市福田区",
    "available_from": date(2020, 2, 10),
    "regions": "4201",
    "recipient_kinds": "医院",
    "note": EXAMPLE_NOTE,
}


def template_xlsx(language: str = "both") -> bytes:
    """The import template: the columns with an example row, the items of the
    catalogue with their units and standards, and what each column holds."""
    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill

    zh = language == "zh"
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "认捐 pledges" if language == "both" else ("认捐" if zh else "pledges")
    bold = Font(bold=True)
    required_fill = PatternFill("solid", fgColor="FFF2CC")
    for position, column in enumerate(COLUMNS, start=1):
        cell = sheet.cell(row=1, column=position, value=_header_label(column, language))
        cell.font = bold
        if column.required:
            cell.fill = required_fill
        help_text = column.help_zh if zh else column.help_en
        if language == "both":
            help_text = f"{column.help_zh}\n{column.help_en}"
        cell.comment = Comment(help_text, "aidlink")
        example = sheet.cell(row=2, column=position, value=EXAMPLE_ROW[column.field])
        example.font = Font(italic=True, color="808080")
        if isinstance(EXAMPLE_ROW[column.field], date):
            example.number_format = "yyyy-mm-dd"
        if column.field in ("origin_region", "regions"):
            example.number_format = "@"
        letter = cell.column_letter
        sheet.column_dimensions[letter].width = max(14, len(cell.value or "") + 4)
    sheet.freeze_panes = "A2"

    items = workbook.create_sheet(
        "物资目录 items" if language == "both" else "物资目录" if zh else "items"
    )
    items.append(
        [
            "code 编码",
            "中文名称",
            "English name",
            "base unit 基本单位",
            "units 可用单位",
            "standards 标准",
            "perishable 易腐",
        ]
    )
    for cell in items[1]:
        cell.font = bold
    for item in catalog.items():
        units = ", ".join(f"{code} {catalog.get_unit(code).names.zh}" for code in item.units)
        standards = "; ".join(f"{s.code} {s.names.zh} / {s.names.en}" for s in item.standards)
        items.append(
            [
                item.code,
                item.names.zh,
                item.names.en,
                item.base_unit,
                units,
                standards,
                f"{item.shelf_life_days} days/天" if item.perishable else "",
            ]
        )
    for letter, width in zip("ABCDEFG", (18, 14, 22, 16, 40, 70, 14), strict=True):
        items.column_dimensions[letter].width = width

    guide = workbook.create_sheet(
        "填写说明 columns" if language == "both" else "填写说明" if zh else "columns"
    )
    guide.append(["English", "中文", "required 必填", "what it holds", "说明"])
    for cell in guide[1]:
        cell.font = bold
    for column in COLUMNS:
        guide.append(
            [
                column.en,
                column.zh,
                "yes 是" if column.required else "",
                column.help_en,
                column.help_zh,
            ]
        )
    guide.append([])
    guide.append(
        [
            "Dates: 2020-02-03, 2020/2/3 or date cells. Rows with the same origin and "
            "available-from date become one pledge. Delete the example row before importing.",
        ]
    )
    guide.append(
        [
            "日期格式：2020-02-03、2020/2/3 或日期单元格。"
            "发货地与可发货日期相同的行合并为一份认捐。导入前请删除示例行。"
        ]
    )
    for letter, width in zip("ABCDE", (18, 16, 12, 60, 50), strict=True):
        guide.column_dimensions[letter].width = width

    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
