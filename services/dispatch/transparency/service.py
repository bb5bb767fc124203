"""The public transparency ledger: what was pledged, reserved, shipped and received, by
item, region and month, and the flows from donor to recipient organisations.

Definitions (quantities in each item's base unit; items are never added together):

- ``pledged``: the quantity of pledge lines that are not cancelled or expired, at the
  pledge's origin region, in the month the pledge was made;
- ``reserved``: the quantity of allocations held for a need and not yet shipped
  (status ``reserved``);
- ``shipped``: the quantity of allocations that left the donor (status ``shipped``,
  ``delivered`` or ``received``);
- ``received``: the quantity recipients accepted, as their latest receipt of each
  shipment line says (damaged and short quantity is not received);
- reserved and shipped count at the need's region in the month the allocation was made;
  received at the need's region in the month of the shipment's first receipt.

A region is the city: the first four digits of the region code (a two-digit province
code stays as it is). A flow is one donor organisation, one recipient organisation and
one item: ``quantity`` is what was reserved or shipped from one to the other,
``shipped`` and ``received`` as above. A donor whose pledge asks for it appears as
``anonymous``, without its id. Flows are filtered by the need's region and the month
the allocation was made. Nothing here names a person, an address or a contact.

``communities``: what each community's distribution reached inside it, as its
latest counts (households reached, people served, vulnerable households reached,
units delivered per item); filtered by region and item, not by dates (see
community.py).

``help_given``: help from people's time, sessions held, people helped and hours given,
by week and city, filtered by region and dates (weeks that overlap them), not by item
(help.py).

Every answer is read from the read model (totals.py), filtered and grouped in SQL:
its cost grows with days, regions, items and organisations, not with lines. Flows
are paged by (item, donor, recipient).
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import String, func, or_, select, tuple_, type_coerce
from sqlalchemy.orm import Session

from services.dispatch.models import ANONYMOUS_DONOR, LedgerFlow, LedgerTotal
from services.dispatch.transparency.community import ledger_communities
from services.dispatch.transparency.help import ledger_help
from services.dispatch.transparency.totals import FLOW_MEASURES, MEASURES, chunked
from services.dispatch.transparency.totals import city as city
from services.dispatch.transparency.trace import ANONYMOUS, org_names
from shared import catalog

# Stable columns of the open-data exports; documented in the README.
TOTAL_COLUMNS = ("month", "region", "item", "base_unit", *MEASURES)
FLOW_COLUMNS = (
    "donor",
    "donor_org_id",
    "recipient",
    "recipient_org_id",
    "item",
    "base_unit",
    "quantity",
    "shipped",
    "received",
)
# Flows in one page of the ledger, unless asked for fewer.
FLOWS_PAGE = 200
FLOWS_PAGE_MAX = 1000


@dataclass(frozen=True)
class Filters:
    item: str | None = None
    # A region code prefix: "42" (a province), "4201" (a city), "420103" (a district).
    region: str | None = None
    # Dates, both included.
    start: date | None = None
    end: date | None = None

    def admits(self, item: str, region: str, when: datetime) -> bool:
        """Whether one quantity, of ``item`` in ``region`` at ``when``, is counted:
        what :meth:`where` asks of the read model."""
        if self.item is not None and item != self.item:
            return False
        if self.region is not None and not region.startswith(self.region):
            return False
        day = when.date()
        if self.start is not None and day < self.start:
            return False
        return self.end is None or day <= self.end

    def where(self, model: Any) -> list[Any]:
        """The filters as conditions on a read-model table."""
        conditions: list[Any] = []
        if self.item is not None:
            conditions.append(model.item == self.item)
        if self.region is not None:
            conditions.append(model.region.startswith(self.region, autoescape=True))
        if self.start is not None:
            conditions.append(model.day >= self.start)
        if self.end is not None:
            conditions.append(model.day <= self.end)
        return conditions

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "region": self.region,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
        }


def month(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}"


def _base_unit(item: str) -> str | None:
    try:
        return catalog.get_item(item).base_unit
    except catalog.CatalogError:
        return None


def _figures() -> dict[str, int]:
    return dict.fromkeys(MEASURES, 0)


def total_rows(session: Session, filters: Filters) -> Iterator[dict[str, Any]]:
    """The finest grain of the ledger: one row per month, region and item, in that
    order."""
    sums = [func.sum(getattr(LedgerTotal, m)) for m in MEASURES]
    stmt = (
        select(LedgerTotal.month, LedgerTotal.city, LedgerTotal.item, *sums)
        .where(*filters.where(LedgerTotal))
        .group_by(LedgerTotal.month, LedgerTotal.city, LedgerTotal.item)
        .having(or_(*(total != 0 for total in sums)))
        .order_by(LedgerTotal.month, LedgerTotal.city, LedgerTotal.item)
    )
    units: dict[str, str | None] = {}
    with _streamed(session, stmt) as rows:
        for m, r, i, *values in rows:
            if i not in units:
                units[i] = _base_unit(i)
            yield {
                "month": m,
                "region": r,
                "item": i,
                "base_unit": units[i],
                **{k: int(v or 0) for k, v in zip(MEASURES, values, strict=True)},
            }


@contextmanager
def _streamed(session: Session, stmt: Any) -> Iterator[Any]:
    """``stmt``'s rows a batch at a time (a server-side cursor on PostgreSQL), closed
    however the reading ends: an export whose client went away leaves nothing open."""
    result = session.execute(stmt, execution_options={"yield_per": 500})
    try:
        yield result
    finally:
        result.close()


def _rollup(rows: list[dict[str, Any]], key: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        target = out if key is None else out.setdefault(row[key], {})
        figures = target.setdefault(row["item"], {"base_unit": row["base_unit"], **_figures()})
        for measure in MEASURES:
            figures[measure] += row[measure]
    return out


def encode_cursor(key: tuple[str, uuid.UUID, uuid.UUID]) -> str:
    raw = json.dumps([key[0], str(key[1]), str(key[2])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, uuid.UUID, uuid.UUID]:
    """The flow a cursor names; ValueError if it is not one :func:`encode_cursor` made."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        item, donor, recipient = json.loads(base64.urlsafe_b64decode(padded))
        return str(item), uuid.UUID(donor), uuid.UUID(recipient)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a cursor of the ledger's flows") from exc


def _flow_groups(
    session: Session, filters: Filters, *, after: str | None = None, limit: int | None = None
) -> Iterator[Any]:
    sums = [func.sum(getattr(LedgerFlow, m)) for m in FLOW_MEASURES]
    keys = (LedgerFlow.item, LedgerFlow.donor_org_id, LedgerFlow.recipient_org_id)
    # The organisations' ids as the driver gives them, made UUIDs once per organisation
    # (:func:`_org_id`) rather than once per row.
    stmt = (
        select(
            LedgerFlow.item,
            type_coerce(LedgerFlow.donor_org_id, String()),
            type_coerce(LedgerFlow.recipient_org_id, String()),
            *sums,
        )
        .where(*filters.where(LedgerFlow))
        .group_by(*keys)
        .having(sums[0] != 0)
        .order_by(*keys)
    )
    if after is not None:
        # A row comparison the (item, donor, recipient) index serves.
        stmt = stmt.where(tuple_(*keys) > tuple_(*decode_cursor(after)))
    if limit is not None:
        stmt = stmt.limit(limit)
    with _streamed(session, stmt) as rows:
        for item, donor, recipient, *figures in rows:
            yield (item, _org_id(donor), _org_id(recipient), *figures)


@functools.lru_cache(maxsize=1024)
def _org_id(raw: Any) -> uuid.UUID:
    """An organisation's id as the driver gave it (a UUID from PostgreSQL, its text
    from SQLite), as a UUID."""
    return raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))


def _shaped_flows(
    session: Session, groups: list[Any], names: dict[uuid.UUID, str] | None = None
) -> list[dict[str, Any]]:
    """The flows of ``groups`` as rows, named; ``names`` holds the organisations' names
    known already (the next batch of an export mostly names the same ones again), and
    learns those looked up."""
    names = {} if names is None else names
    unknown = {k for g in groups for k in (g[1], g[2])} - {ANONYMOUS_DONOR} - names.keys()
    if unknown:
        names.update(org_names(session, unknown))
    units: dict[str, str | None] = {}
    out = []
    for item, donor, recipient, quantity, shipped, received in groups:
        if item not in units:
            units[item] = _base_unit(item)
        anonymous = donor == ANONYMOUS_DONOR
        out.append(
            {
                "donor": ANONYMOUS if anonymous else names.get(donor) or str(donor),
                "donor_org_id": None if anonymous else donor,
                "recipient": names.get(recipient) or str(recipient),
                "recipient_org_id": recipient,
                "item": item,
                "base_unit": units[item],
                "quantity": int(quantity or 0),
                "shipped": int(shipped or 0),
                "received": int(received or 0),
            }
        )
    return out


# Organisations' names an export keeps between its batches (a few hundred bytes each).
NAMES_KEPT = 5_000


def flow_rows(session: Session, filters: Filters, batch: int = 500) -> Iterator[dict[str, Any]]:
    """Donor organisation -> recipient organisation, per item, every one, in the
    order of (item, donor, recipient); names looked up a batch at a time."""
    groups = _flow_groups(session, filters)
    names: dict[uuid.UUID, str] = {}
    for each in chunked(groups, batch):
        if len(names) > NAMES_KEPT:
            names.clear()
        yield from _shaped_flows(session, each, names)


def flows_page(
    session: Session, filters: Filters, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of flows, and the cursor of the next (None after the last)."""
    groups = list(_flow_groups(session, filters, after=cursor, limit=limit + 1))
    next_cursor = None
    if len(groups) > limit:
        groups = groups[:limit]
        last = groups[-1]
        next_cursor = encode_cursor((last[0], last[1], last[2]))
    return _shaped_flows(session, groups), next_cursor


def ledger(
    session: Session, filters: Filters, *, cursor: str | None = None, limit: int = FLOWS_PAGE
) -> dict[str, Any]:
    rows = list(total_rows(session, filters))
    flows, next_cursor = flows_page(session, filters, cursor=cursor, limit=limit)
    return {
        "filters": filters.as_dict(),
        "totals": _rollup(rows, None),
        "by_region": _rollup(rows, "region"),
        "by_month": _rollup(rows, "month"),
        "flows": flows,
        "next_cursor": next_cursor,
        # Inside the communities: their latest counts, whatever the dates.
        "communities": ledger_communities(session, item=filters.item, region=filters.region),
        # Help from people's time: counts by week and city (not filtered by item).
        "help_given": ledger_help(
            session, region=filters.region, start=filters.start, end=filters.end
        ),
    }
