"""Household orders as a building leader enters them: rows pasted from a spreadsheet
or a chat, the committee's limits per household, and the totals per building and for
the whole community."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.catalog.community import community_item

# The most rows one batch takes (a building rarely has more households).
MAX_ROWS = 2000


@dataclass
class Batch:
    """Rows of a batch, each a household and what it orders (item code -> quantity in
    the item's ordering unit; 0 clears the item), and what was wrong, by row."""

    rows: list[tuple[uuid.UUID, dict[str, int]]] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def refuse(self, where: str, message: str) -> None:
        self.errors.setdefault(where, []).append(message)


def address_key(unit: str, room: str) -> str:
    """How a household is written in a pasted row: ``unit-room``, or the room alone."""
    return f"{unit}-{room}" if unit else room


def _normalise_address(text: str) -> str:
    text = text.strip().replace("单元", "-").replace("\u2014", "-").replace("\uff0d", "-")
    text = re.sub(r"[室号\s]", "", text)
    return text.strip("-")


def parse_paste(text: str, households: Mapping[str, uuid.UUID]) -> Batch:
    """Rows pasted as a table: a header naming the items (code or name, either
    language) after a first column of households (``1-101``, ``1单元101``, ``101``),
    then one row a household; tabs or commas between cells, empty cells for none."""
    batch = Batch()
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        batch.refuse("text", "Paste a header row of items, then one row a household.")
        return batch
    if len(lines) > MAX_ROWS + 1:
        batch.refuse("text", f"At most {MAX_ROWS} households at once.")
        return batch
    delimiter = "\t" if "\t" in lines[0] else ","
    table = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    header = table[0]
    items: list[str | None] = []
    for column, name in enumerate(header[1:], start=2):
        item = community_item(name.strip()) if name.strip() else None
        if item is None and name.strip():
            batch.refuse(f"row 1, column {column}", f"{name.strip()!r} is not an item to order.")
        items.append(item.code if item else None)
    for number, cells in enumerate(table[1:], start=2):
        where = f"row {number}"
        if not cells or not cells[0].strip():
            batch.refuse(where, "Name the household first (e.g. 1-101).")
            continue
        household = households.get(_normalise_address(cells[0]))
        if household is None:
            batch.refuse(where, f"No household {cells[0].strip()!r} in this building.")
            continue
        wanted: dict[str, int] = {}
        for offset, cell in enumerate(cells[1:]):
            if offset >= len(items) or not cell.strip():
                continue
            code = items[offset]
            if code is None:
                continue
            value = cell.strip()
            if not value.isdigit():
                batch.refuse(where, f"{value!r} is not a whole number (column {offset + 2}).")
                continue
            wanted[code] = int(value)
        batch.rows.append((household, wanted))
    return batch


def check_rows(
    batch: Batch,
    limits: Mapping[str, int],
    label: Mapping[uuid.UUID, str],
) -> None:
    """Each item known, no household twice, nothing over the committee's limit."""
    seen: set[uuid.UUID] = set()
    for household, wanted in batch.rows:
        where = label.get(household, str(household))
        if household in seen:
            batch.refuse(where, "This household is in the batch twice.")
        seen.add(household)
        for code, quantity in wanted.items():
            if community_item(code) is None:
                batch.refuse(where, f"{code!r} is not an item to order.")
            elif quantity < 0:
                batch.refuse(where, f"{code}: a quantity is 0 or more.")
            elif code in limits and quantity > limits[code]:
                batch.refuse(
                    where,
                    f"{code}: {quantity} is more than the {limits[code]} a household may order.",
                )


@dataclass(frozen=True)
class Totals:
    """What a round adds up to: per building and for the community, per item; and how
    many households ordered and how many people they are."""

    by_building: dict[uuid.UUID, dict[str, int]]
    community: dict[str, int]
    households: int
    people: int


def totals(
    lines: Iterable[tuple[uuid.UUID, uuid.UUID, str, int]], people: Mapping[uuid.UUID, int]
) -> Totals:
    """``lines``: (building, household, item, quantity); ``people`` per household."""
    by_building: dict[uuid.UUID, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    community: dict[str, int] = defaultdict(int)
    households: set[uuid.UUID] = set()
    for building, household, item, quantity in lines:
        by_building[building][item] += quantity
        community[item] += quantity
        households.add(household)
    return Totals(
        by_building={b: dict(items) for b, items in by_building.items()},
        community=dict(community),
        households=len(households),
        people=sum(people.get(h, 0) for h in households),
    )
