"""Printed documents: a shipment's waybill (A4, or a 100 x 150 mm label for the
parcel), the delivery note its recipient signs, and a logistics company's daily run
sheet. They are drawn with ReportLab in the page's language, from what the API shows
the signed-in user (so the privacy rules of the pages hold on paper too), with the
same formatting as the pages (``base.quantity``, ``base.packed``, ``times``).

Chinese needs a TrueType font with CJK glyphs, embedded in each PDF: WenQuanYi Micro
Hei (Debian's ``fonts-wqy-microhei``, Apache-2.0 or GPL-3.0; ``make install`` and the
image install it), or any TrueType font (.ttf or .ttc) named by ``AIDLINK_PDF_FONT``.
The QR code on waybills and delivery notes opens the shipment's receipt page (segno).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import segno
from flask_babel import gettext as _
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from services.gateway.web.base import packed, quantity_text, region_name
from services.gateway.web.i18n import base_unit, item_name, standard_name, word
from services.gateway.web.times import LOCAL, local_time

FONT = "AidlinkCJK"
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
LABEL = (100 * mm, 150 * mm)
SIZES = ("a4", "label")


class FontMissing(RuntimeError):
    """No font with Chinese glyphs to embed."""


def font_path() -> str:
    configured = os.environ.get("AIDLINK_PDF_FONT")
    if configured:
        if not os.path.isfile(configured):
            raise FontMissing(f"AIDLINK_PDF_FONT names {configured}, which is not a file")
        return configured
    for path in FONT_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise FontMissing(
        "no font with Chinese characters for printing: install Debian's fonts-wqy-microhei "
        "(make install does) or set AIDLINK_PDF_FONT to a TrueType font"
    )


def _register_font() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    path = font_path()
    kwargs = {"subfontIndex": 0} if path.endswith(".ttc") else {}
    pdfmetrics.registerFont(TTFont(FONT, path, **kwargs))


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=FONT, fontSize=9, leading=12, wordWrap="CJK")
    return {
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
        "title": ParagraphStyle("title", parent=base, fontSize=16, leading=20),
        "big": ParagraphStyle("big", parent=base, fontSize=13, leading=16),
        "head": ParagraphStyle("head", parent=base, fontSize=8, leading=10, textColor=colors.grey),
    }


class QR(Flowable):
    """A QR code drawn as vector squares, ``size`` wide."""

    def __init__(self, data: str, size: float) -> None:
        super().__init__()
        self.code = segno.make(data, error="m")
        self.size = size
        self.width = self.height = size

    def draw(self) -> None:
        matrix = list(self.code.matrix)
        border = 2
        n = len(matrix) + 2 * border
        cell = self.size / n
        self.canv.setFillColor(colors.black)
        for r, row in enumerate(matrix):
            for c, dark in enumerate(row):
                if dark:
                    self.canv.rect(
                        (c + border) * cell,
                        self.size - (r + border + 1) * cell,
                        cell,
                        cell,
                        stroke=0,
                        fill=1,
                    )


def _p(text: Any, style: ParagraphStyle) -> Paragraph:
    escaped = str(text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return Paragraph(escaped.replace("\n", "<br/>"), style)


def _place(
    name: str, place: dict[str, Any] | None, styles: dict[str, ParagraphStyle]
) -> list[Paragraph]:
    place = place or {}
    out = [_p(name, styles["big"])]
    named = place.get("place") or {}
    if named.get("name"):
        out.append(_p(named["name"], styles["body"]))
    where = " ".join(str(x) for x in (region_name(place.get("region")), place.get("address")) if x)
    if where:
        out.append(_p(where, styles["body"]))
    if named.get("opening_hours"):
        out.append(_p(_("Open: %(hours)s", hours=named["opening_hours"]), styles["body"]))
    if named.get("access_notes"):
        out.append(_p(_("Access: %(notes)s", notes=named["access_notes"]), styles["body"]))
    contact = place.get("contact") or {}
    if contact.get("name") or contact.get("phone"):
        out.append(
            _p(
                _("Contact: %(who)s", who=" ".join(str(x) for x in contact.values() if x)),
                styles["body"],
            )
        )
    return out


def _weight_volume(item: str, amount: int) -> str:
    """What the catalogue knows of a line's weight or volume: its base unit is one."""
    unit = base_unit(item)
    if unit in ("g", "ml"):
        return quantity_text(amount, unit)
    return ""


def _goods(line: dict[str, Any]) -> str:
    """A line's item by name, and its standard's code where it names one, so that masks
    of GB 19083 and of YY 0469 are told apart on a label or a run sheet."""
    standard = line.get("standard")
    return f"{item_name(line['item'])} {standard}" if standard else item_name(line["item"])


def _packed_text(line: dict[str, Any]) -> str:
    return packed(line["quantity"], line.get("pack_unit"), line.get("pack_size"), line["item"])


def _lines_table(
    shipment: dict[str, Any], styles: dict[str, ParagraphStyle], *, receipt: bool, width: float
) -> Table:
    head = [_("No."), _("Item"), _("Standard"), _("As packed"), _("Quantity")]
    if receipt:
        head += [_("Accepted"), _("Damaged"), _("Short")]
    else:
        head += [_("Weight or volume")]
    rows: list[list[Any]] = [[_p(h, styles["head"]) for h in head]]
    for line in shipment["lines"]:
        row = [
            _p(line["line_no"], styles["body"]),
            _p(item_name(line["item"]), styles["body"]),
            _p(standard_name(line["item"], line.get("standard")), styles["small"]),
            _p(_packed_text(line), styles["body"]),
            _p(quantity_text(line["quantity"], base_unit(line["item"])), styles["body"]),
        ]
        if receipt:
            row += ["", "", ""]
        else:
            row.append(_p(_weight_volume(line["item"], line["quantity"]), styles["body"]))
        rows.append(row)
    if receipt:
        fractions: tuple[float, ...] = (0.06, 0.2, 0.14, 0.18, 0.14, 0.1, 0.09, 0.09)
    else:
        fractions = (0.06, 0.24, 0.16, 0.2, 0.17, 0.17)
    table = Table(rows, colWidths=[width * f for f in fractions], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT),
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
            ]
        )
    )
    return table


def _header(
    title: str,
    shipment: dict[str, Any],
    names: dict[str, str],
    receipt_url: str,
    styles: dict[str, ParagraphStyle],
    width: float,
) -> list[Flowable]:
    number = shipment.get("tracking_number") or shipment["id"]
    facts = [
        _p(title, styles["title"]),
        _p(_("Tracking number %(number)s", number=number), styles["big"]),
    ]
    if shipment.get("tracking_ref"):
        facts.append(
            _p(_("Carrier's waybill number: %(ref)s", ref=shipment["tracking_ref"]), styles["body"])
        )
    carrier = names.get(shipment.get("logistics_org_id") or "") or _("not assigned yet")
    facts.append(_p(_("Logistics company: %(name)s", name=carrier), styles["body"]))
    facts.append(_p(_("Status: %(status)s", status=word(shipment["status"])), styles["body"]))
    if shipment.get("eta"):
        facts.append(_p(_("Expected: %(when)s", when=local_time(shipment["eta"])), styles["body"]))
    qr_size = 32 * mm
    top = Table([[facts, QR(receipt_url, qr_size)]], colWidths=[width - qr_size - 4, qr_size + 4])
    top.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    donor = (
        shipment.get("donor_name") or names.get(shipment.get("donor_org_id") or "") or ""
        if shipment.get("donor_org_id")
        else _("An anonymous donor")
    )
    recipient = names.get(shipment["recipient_org_id"]) or ""
    places = Table(
        [
            [_p(_("Pick up from"), styles["head"]), _p(_("Deliver to"), styles["head"])],
            [
                _place(donor, shipment.get("origin"), styles),
                _place(recipient, shipment.get("destination"), styles),
            ],
        ],
        colWidths=[width / 2, width / 2],
    )
    places.setStyle(
        TableStyle(
            [
                ("BOX", (0, 1), (0, 1), 0.6, colors.black),
                ("BOX", (1, 1), (1, 1), 0.6, colors.black),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return [top, Spacer(1, 4 * mm), places, Spacer(1, 5 * mm)]


def _signatures(labels: Sequence[str], styles: dict[str, ParagraphStyle], width: float) -> Table:
    cells = [
        [_p(text, styles["body"]) for text in labels],
        [_p(_("Signature and date"), styles["small"]) for _text in labels],
    ]
    table = Table(cells, colWidths=[width / len(labels)] * len(labels), rowHeights=[None, 18 * mm])
    table.setStyle(
        TableStyle(
            [("GRID", (0, 0), (-1, -1), 0.4, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP")]
        )
    )
    return table


def _footer(canvas: Canvas, doc: Any) -> None:
    canvas.saveState()
    canvas.setFont(FONT, 7)
    printed = datetime.now(LOCAL).strftime("%Y-%m-%d %H:%M")
    canvas.drawString(
        doc.leftMargin,
        8 * mm,
        _("Printed %(when)s (Beijing time) · page %(page)s", when=printed, page=doc.page),
    )
    canvas.restoreState()


def _build(
    story: list[Flowable], pagesize: tuple[float, float], margin: float, title: str
) -> bytes:
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=pagesize,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin + 4 * mm,
        title=title,
        author="aidlink",
    )
    doc.build(story, onFirstPage=_footer, onLaterPages=_footer)
    return out.getvalue()


def waybill(
    shipment: dict[str, Any], names: dict[str, str], receipt_url: str, size: str = "a4"
) -> bytes:
    """The waybill that travels with the goods: both places with their contacts, the
    lines as packed and in base units, and the QR code of the receipt page."""
    _register_font()
    styles = _styles()
    title = _("Waybill")
    if size == "label":
        return _label(shipment, names, receipt_url, styles)
    width = A4[0] - 30 * mm
    story = _header(title, shipment, names, receipt_url, styles, width)
    story.append(_lines_table(shipment, styles, receipt=False, width=width))
    story.append(Spacer(1, 8 * mm))
    story.append(
        KeepTogether(_signatures([_("Shipper"), _("Driver"), _("Receiver")], styles, width))
    )
    return _build(story, A4, 15 * mm, f"{title} {shipment.get('tracking_number') or ''}")


def _label(
    shipment: dict[str, Any],
    names: dict[str, str],
    receipt_url: str,
    styles: dict[str, ParagraphStyle],
) -> bytes:
    number = shipment.get("tracking_number") or shipment["id"]
    donor = (
        shipment.get("donor_name") or names.get(shipment.get("donor_org_id") or "") or ""
        if shipment.get("donor_org_id")
        else _("An anonymous donor")
    )
    story: list[Flowable] = [
        _p(number, styles["title"]),
        QR(receipt_url, 30 * mm),
        Spacer(1, 2 * mm),
        _p(_("Deliver to"), styles["head"]),
        *_place(names.get(shipment["recipient_org_id"]) or "", shipment.get("destination"), styles),
        Spacer(1, 2 * mm),
        _p(_("Pick up from"), styles["head"]),
        *_place(donor, shipment.get("origin"), styles),
        Spacer(1, 2 * mm),
    ]
    for line in shipment["lines"]:
        story.append(
            _p(
                f"{_goods(line)} · {_packed_text(line)}",
                styles["small"],
            )
        )
    return _build(story, LABEL, 5 * mm, f"{_('Waybill')} {number}")


def delivery_note(shipment: dict[str, Any], names: dict[str, str], receipt_url: str) -> bytes:
    """The note the recipient signs on delivery: what was shipped, with boxes for what
    was accepted, damaged and short."""
    _register_font()
    styles = _styles()
    title = _("Delivery note")
    width = A4[0] - 30 * mm
    story = _header(title, shipment, names, receipt_url, styles, width)
    story.append(_lines_table(shipment, styles, receipt=True, width=width))
    story.append(Spacer(1, 4 * mm))
    story.append(
        _p(
            _(
                "Count what arrived, write what was accepted, damaged and short on each "
                "line, sign, and confirm the receipt on the page the QR code opens."
            ),
            styles["body"],
        )
    )
    story.append(Spacer(1, 6 * mm))
    story.append(KeepTogether(_signatures([_("Driver"), _("Receiver")], styles, width)))
    return _build(story, A4, 15 * mm, f"{title} {shipment.get('tracking_number') or ''}")


def run_sheet(
    shipments: Sequence[dict[str, Any]], company: str, day: str, names: dict[str, str]
) -> bytes:
    """A logistics company's pickups and deliveries for a day, one row a shipment."""
    _register_font()
    styles = _styles()
    title = _("Run sheet")
    page = landscape(A4)
    width = page[0] - 20 * mm
    story: list[Flowable] = [
        _p(f"{title} · {company} · {day}", styles["title"]),
        Spacer(1, 4 * mm),
    ]
    head = [_("Tracking number"), _("Status"), _("Pick up from"), _("Deliver to"), _("Goods")]
    rows: list[list[Any]] = [[_p(h, styles["head"]) for h in head]]
    for s in shipments:
        donor = (
            s.get("donor_name") or names.get(s.get("donor_org_id") or "") or ""
            if s.get("donor_org_id")
            else _("An anonymous donor")
        )
        goods = "\n".join(f"{_goods(line)} · {_packed_text(line)}" for line in s["lines"])
        status = word(s["status"])
        if s.get("eta"):
            status += "\n" + _("Expected: %(when)s", when=local_time(s["eta"]))
        rows.append(
            [
                _p(s.get("tracking_number") or s["id"], styles["body"]),
                _p(status, styles["body"]),
                _place(donor, s.get("origin"), styles),
                _place(names.get(s["recipient_org_id"]) or "", s.get("destination"), styles),
                _p(goods, styles["small"]),
            ]
        )
    if len(rows) == 1:
        story.append(_p(_("Nothing to pick up or deliver on this day."), styles["body"]))
    else:
        fractions = (0.13, 0.12, 0.27, 0.27, 0.21)
        table = Table(rows, colWidths=[width * f for f in fractions], repeatRows=1)
        table.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ]
            )
        )
        story.append(table)
    return _build(story, page, 10 * mm, f"{title} {day}")
