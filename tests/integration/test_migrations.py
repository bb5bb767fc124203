"""Migrations that change data as well as tables: run on a database holding rows from
before them, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy import inspect as sa_inspect

from shared.config import Settings
from shared.migrations import alembic_config, upgrade


def test_shipments_made_before_tracking_numbers_are_numbered_in_order(
    settings: Settings,
) -> None:
    url = settings.database_url("dispatch")
    command.downgrade(alembic_config("dispatch", url), "0008")
    engine = create_engine(url)
    made = [
        (uuid.uuid4(), datetime(2020, 2, 3, 8, tzinfo=UTC)),
        (uuid.uuid4(), datetime(2020, 2, 1, 9, tzinfo=UTC)),
        (uuid.uuid4(), datetime(2021, 1, 5, 10, tzinfo=UTC)),
    ]
    with engine.begin() as conn:
        for shipment_id, created_at in made:
            conn.execute(
                text(
                    "INSERT INTO shipments (id, status, status_at, last_event_at, donor_org_id,"
                    " recipient_org_id, origin, destination, origin_key, destination_key,"
                    " created_at, updated_at, version, donor_anonymous) VALUES (:id, 'planned',"
                    " :at, :at, :donor, :recipient, '{}', '{}', 'o', 'd', :at, :at, 1, false)"
                ),
                {
                    "id": shipment_id if url.startswith("postgresql") else shipment_id.hex,
                    "at": created_at,
                    "donor": uuid.uuid4().hex,
                    "recipient": uuid.uuid4().hex,
                },
            )
    upgrade("dispatch", settings)
    with engine.connect() as conn:
        numbers: dict[Any, str] = dict(
            conn.execute(text("SELECT created_at, tracking_number FROM shipments")).all()
        )
        counters: dict[int, int] = dict(
            conn.execute(text("SELECT year, last FROM tracking_counters")).all()
        )
    engine.dispose()
    by_time = [numbers[k] for k in sorted(numbers)]
    assert by_time == ["AL-2020-000001", "AL-2020-000002", "AL-2021-000001"]
    assert counters == {2020: 2, 2021: 1}


def test_a_communitys_reach_is_kept_from_the_deliveries_made_before_it(
    settings: Settings,
) -> None:
    """Community 0014 keeps each community's units delivered and when each household was
    first reached: on a database holding deliveries from before it, it fills both from
    them, so that the reach read afterwards is the reach counted from the deliveries."""
    from sqlalchemy import insert

    from services.community.distribution.service import counted_reach, reach
    from services.community.models import (
        Building,
        Distribution,
        Household,
        HouseholdDelivery,
    )
    from shared.db import make_engine, make_session_factory

    url = settings.database_url("community")
    command.downgrade(alembic_config("community", url), "0013")
    engine = create_engine(url)
    org, other = uuid.uuid4(), uuid.uuid4()
    early, late = datetime(2020, 2, 3, 8, tzinfo=UTC), datetime(2020, 2, 9, 8, tzinfo=UTC)
    households: dict[str, uuid.UUID] = {}
    with engine.begin() as conn:
        for community in (org, other):
            building, split = uuid.uuid4(), uuid.uuid4()
            conn.execute(insert(Building).values(id=building, org_id=community, name="1"))
            conn.execute(insert(Distribution).values(id=split, org_id=community, rule="equal"))
            for room, people, vulnerable in (
                ("101", 3, True),
                ("102", 2, False),
                ("103", 4, False),
            ):
                household = uuid.uuid4()
                households[f"{community}-{room}"] = household
                conn.execute(
                    insert(Household).values(
                        id=household,
                        org_id=community,
                        building_id=building,
                        room=room,
                        people=people,
                        vulnerable=vulnerable,
                    )
                )
            # 101 twice delivered, 102 once and once not at home, 103 still waiting.
            for room, status, done_at, items in (
                ("101", "delivered", late, {"vegetables": 2000, "mask": 10}),
                ("101", "delivered", early, {"vegetables": 1500}),
                ("102", "delivered", late, {"vegetables": 1000}),
                ("102", "not_home", early, {"vegetables": 700}),
                ("103", "pending", None, {"mask": 5}),
            ):
                conn.execute(
                    insert(HouseholdDelivery).values(
                        id=uuid.uuid4(),
                        org_id=community,
                        distribution_id=split,
                        building_id=building,
                        household_id=households[f"{community}-{room}"],
                        items=items,
                        status=status,
                        done_at=done_at,
                    )
                )
    engine.dispose()
    upgrade("community", settings)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        kept = reach(session, org)
        assert kept == counted_reach(session, org)
        assert kept["units_delivered"] == {"vegetables": 4500, "mask": 10}
        assert (kept["households_reached"], kept["people_served"]) == (2, 5)
        assert kept["vulnerable_households_reached"] == 1
        assert reach(session, other) == {**kept, "org_id": other}
        # Reached from the first delivery made to it; not reached, not dated.
        first = session.get(Household, households[f"{org}-101"])
        assert first is not None and first.reached_at == early
        waiting = session.get(Household, households[f"{org}-103"])
        assert waiting is not None and waiting.reached_at is None
    engine.dispose()
    # And back: the table and the column go.
    command.downgrade(alembic_config("community", url), "0013")
    engine = create_engine(url)
    inspector = sa_inspect(engine)
    assert "reach_units" not in inspector.get_table_names()
    assert "reached_at" not in {c["name"] for c in inspector.get_columns("households")}
    engine.dispose()
    upgrade("community", settings)


def test_goods_received_before_are_put_in_line_and_shares_kept_in_rows(
    settings: Settings,
) -> None:
    """Community 0015 gives each goods received its place in line (when its shipment's
    units first went into stock, ties by shipment id; goods never in stock last) and
    the units accepted before it; dispatch 0021 keeps the shares each community's
    latest snapshot listed as rows. Both from data that was there, both ways."""
    import sqlalchemy as sa

    from services.community.distribution.service import delivered_from_shipments, line_drift
    from services.community.models import ReceivedGoods
    from shared.db import UTCDateTime, make_engine, make_session_factory

    url = settings.database_url("community")
    command.downgrade(alembic_config("community", url), "0014")
    goods = sa.table(
        "received_goods",
        sa.column("shipment_id", sa.Uuid()),
        sa.column("item", sa.String()),
        sa.column("org_id", sa.Uuid()),
        sa.column("accepted", sa.Integer()),
        sa.column("receipt_id", sa.Uuid()),
    )
    moves = sa.table(
        "stock_moves",
        sa.column("id", sa.Uuid()),
        sa.column("org_id", sa.Uuid()),
        sa.column("item", sa.String()),
        sa.column("quantity", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("ref_id", sa.Uuid()),
        sa.column("at", UTCDateTime(timezone=True)),
    )
    org = uuid.uuid4()
    first, second, never = sorted(uuid.uuid4() for _ in range(3))
    # The second shipment's units went into stock first; the third's never did (all
    # damaged), so it comes last.
    arrived = {
        second: datetime(2020, 2, 3, 8, tzinfo=UTC),
        first: datetime(2020, 2, 5, 8, tzinfo=UTC),
    }
    accepted = {first: 400, second: 300, never: 0}
    engine = create_engine(url)
    with engine.begin() as conn:
        for shipment, quantity in accepted.items():
            conn.execute(
                goods.insert().values(
                    shipment_id=shipment,
                    item="vegetables",
                    org_id=org,
                    accepted=quantity,
                    receipt_id=uuid.uuid4(),
                )
            )
            if shipment in arrived:
                conn.execute(
                    moves.insert().values(
                        id=uuid.uuid4(),
                        org_id=org,
                        item="vegetables",
                        quantity=quantity,
                        kind="received",
                        ref_id=shipment,
                        at=arrived[shipment],
                    )
                )
    engine.dispose()
    upgrade("community", settings)
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        placed = {
            g.shipment_id: (g.received_before, g.first_in)
            for g in session.query(ReceivedGoods).filter_by(org_id=org)
        }
        assert placed[second] == (0, arrived[second])
        assert placed[first] == (300, arrived[first])
        assert placed[never][0] == 700 and placed[never][1] > arrived[first]
        assert line_drift(session, org) == []
        # 500 delivered: the second shipment's 300 first, then 200 of the first.
        shares = delivered_from_shipments(session, org, {"vegetables": 500})
        assert [(s["shipment_id"], s["quantity"]) for s in shares] == [(second, 300), (first, 200)]
    engine.dispose()
    command.downgrade(alembic_config("community", url), "0014")
    engine = create_engine(url)
    inspector = sa_inspect(engine)
    columns = {c["name"] for c in inspector.get_columns("received_goods")}
    assert not {"first_in", "received_before", "receipt_sequence"} & columns
    assert "whole_sent" not in {c["name"] for c in inspector.get_columns("reach_snapshots")}
    assert "ix_received_goods_org" in {i["name"] for i in inspector.get_indexes("received_goods")}
    engine.dispose()
    upgrade("community", settings)

    # Dispatch: the shares listed in each community's row become rows of their own.
    url = settings.database_url("dispatch")
    command.downgrade(alembic_config("dispatch", url), "0020")
    reach = sa.table(
        "community_reach",
        sa.column("org_id", sa.Uuid()),
        sa.column("sequence", sa.BigInteger()),
        sa.column("households_reached", sa.Integer()),
        sa.column("people_served", sa.Integer()),
        sa.column("vulnerable_households_reached", sa.Integer()),
        sa.column("units_delivered", sa.JSON()),
        sa.column("from_shipments", sa.JSON()),
        sa.column("as_of", UTCDateTime(timezone=True)),
        sa.column("updated_at", UTCDateTime(timezone=True)),
    )
    receipt = uuid.uuid4()
    listed = [
        {
            "shipment_id": str(second),
            "receipt_id": str(receipt),
            "item": "vegetables",
            "quantity": 300,
        },
        {
            "shipment_id": str(first),
            "receipt_id": str(receipt),
            "item": "vegetables",
            "quantity": 200,
        },
    ]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            reach.insert().values(
                org_id=org,
                sequence=7,
                households_reached=2,
                people_served=5,
                vulnerable_households_reached=1,
                units_delivered={"vegetables": 500},
                from_shipments=listed,
                as_of=arrived[first],
                updated_at=arrived[first],
            )
        )
    engine.dispose()
    upgrade("dispatch", settings)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT shipment_id, item, quantity, sequence FROM community_shares "
                "ORDER BY quantity DESC"
            )
        ).all()
        assert [(uuid.UUID(str(r[0])), r[1], r[2], r[3]) for r in rows] == [
            (second, "vegetables", 300, 7),
            (first, "vegetables", 200, 7),
        ]
        assert "from_shipments" not in {
            c["name"] for c in sa_inspect(conn).get_columns("community_reach")
        }
        # The list held named every share as of its snapshot.
        assert conn.execute(sa.text("SELECT whole_sequence FROM community_reach")).scalar() == 7
    engine.dispose()
    command.downgrade(alembic_config("dispatch", url), "0020")
    engine = create_engine(url)
    with engine.connect() as conn:
        back = conn.execute(sa.select(reach.c.from_shipments)).scalar_one()
    assert sorted(back, key=lambda s: -s["quantity"]) == listed
    assert "community_shares" not in sa_inspect(engine).get_table_names()
    engine.dispose()
    upgrade("dispatch", settings)


def test_community_cases_tables_come_and_go_with_their_migration(settings: Settings) -> None:
    """Community 0007 adds residents' cases: going back removes their tables and keeps
    the households', going forward again brings them back (on both backends)."""
    from sqlalchemy import inspect

    url = settings.database_url("community")
    cases = {"cases", "case_follow_ups", "case_counters"}
    command.downgrade(alembic_config("community", url), "0006")
    engine = create_engine(url)
    before = set(inspect(engine).get_table_names())
    assert not cases & before and "households" in before
    engine.dispose()
    upgrade("community", settings)
    engine = create_engine(url)
    assert cases <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_community_help_tables_come_and_go_with_their_migration(settings: Settings) -> None:
    """Community 0008 adds helpers, requests for help, scheduling runs and sessions:
    going back removes their tables and keeps the cases', going forward again brings
    them back, the one-slot-per-helper rule with them (on both backends)."""
    from sqlalchemy import inspect

    url = settings.database_url("community")
    tables = {"helpers", "help_requests", "help_runs", "help_sessions"}
    command.downgrade(alembic_config("community", url), "0007")
    engine = create_engine(url)
    before = set(inspect(engine).get_table_names())
    assert not tables & before and "cases" in before
    engine.dispose()
    upgrade("community", settings)
    engine = create_engine(url)
    found = inspect(engine)
    assert tables <= set(found.get_table_names())
    unique = {c["name"]: c["column_names"] for c in found.get_unique_constraints("help_sessions")}
    assert unique["uq_help_session_slot"] == ["helper_id", "held_start"]
    engine.dispose()


def test_community_hotline_tables_come_and_go_with_their_migration(settings: Settings) -> None:
    """Community 0009 adds hotlines and their call log: going back removes their tables
    and keeps the help sessions', going forward again brings them back, the minutes'
    bounds with them (on both backends)."""
    from sqlalchemy import inspect

    url = settings.database_url("community")
    tables = {"hotlines", "hotline_calls"}
    command.downgrade(alembic_config("community", url), "0008")
    engine = create_engine(url)
    before = set(inspect(engine).get_table_names())
    assert not tables & before and "help_sessions" in before
    engine.dispose()
    upgrade("community", settings)
    engine = create_engine(url)
    found = inspect(engine)
    assert tables <= set(found.get_table_names())
    checks = {c["name"] for c in found.get_check_constraints("hotline_calls")}
    assert "ck_hotline_call_minutes" in checks
    engine.dispose()


def test_community_session_notes_come_and_go_with_their_migration(settings: Settings) -> None:
    """Community 0010 adds session notes, the contact provider's connections and the
    columns of closing, following and editing: going back removes them and keeps the
    help sessions', going forward again brings them back, one note a session with them
    (on both backends)."""
    from sqlalchemy import inspect

    url = settings.database_url("community")
    tables = {"help_session_notes", "help_connections"}
    command.downgrade(alembic_config("community", url), "0009")
    engine = create_engine(url)
    found = inspect(engine)
    assert not tables & set(found.get_table_names())
    assert "minutes" not in {c["name"] for c in found.get_columns("help_sessions")}
    engine.dispose()
    upgrade("community", settings)
    engine = create_engine(url)
    found = inspect(engine)
    assert tables <= set(found.get_table_names())
    assert {"org_id", "first_request_id", "follow_token_hash"} <= {
        c["name"] for c in found.get_columns("help_requests")
    }
    unique = {
        c["name"]: c["column_names"] for c in found.get_unique_constraints("help_session_notes")
    }
    assert unique["uq_help_session_note"] == ["session_id"]
    engine.dispose()


# Look-ups that read what a table ever held without an index of their own: each query
# (as the code asks it) and the index that now serves it.
LOOKUPS = (
    (
        "dispatch",
        "SELECT id FROM allocations WHERE recipient_org_id = :o ORDER BY created_at, id",
        "ix_allocations_recipient_created",
    ),
    (
        "dispatch",
        "SELECT id FROM allocations WHERE donor_org_id = :o ORDER BY created_at, id",
        "ix_allocations_donor_created",
    ),
    ("dispatch", "SELECT id FROM shipments WHERE tracking_ref = :o", "ix_shipments_tracking_ref"),
    (
        "dispatch",
        "SELECT id FROM matching_runs WHERE status = 'preview' ORDER BY created_at, id",
        "ix_matching_runs_status_created",
    ),
    (
        "dispatch",
        "SELECT id FROM supply_lines WHERE pledge_status = 'open' AND item IN ('mask')",
        "ix_supply_lines_item_pledge_status",
    ),
    (
        "donations",
        "SELECT id FROM reservations WHERE pledge_id = :o AND status = 'active'",
        "ix_reservations_pledge",
    ),
    (
        "donations",
        "SELECT id FROM pledge_lines WHERE best_before < '2020-02-01'",
        "ix_pledge_lines_best_before",
    ),
    (
        "community",
        "SELECT id FROM help_sessions WHERE helper_id = :o AND starts_at < '2020-02-01'",
        "ix_help_sessions_helper_starts",
    ),
    (
        "community",
        "SELECT id FROM help_sessions WHERE starts_at < '2020-02-01' ORDER BY starts_at",
        "ix_help_sessions_starts",
    ),
    ("community", "SELECT id FROM help_requests WHERE user_id = :o", "ix_help_requests_user_id"),
    (
        "gateway",
        "SELECT id FROM organisations WHERE status = 'pending' ORDER BY created_at, id",
        "ix_organisations_status_created",
    ),
    # A community's goods received, and the few in line that a delivery's units came from.
    ("community", "SELECT item FROM received_goods WHERE org_id = :o", "ix_received_goods_line"),
    (
        "community",
        "SELECT shipment_id FROM received_goods WHERE org_id = :o AND item = 'mask' "
        "AND received_before >= 100 AND received_before < 200",
        "ix_received_goods_line",
    ),
    (
        "dispatch",
        "SELECT shipment_id, item FROM community_shares WHERE org_id = :o",
        "ix_community_shares_org",
    ),
    (
        "community",
        "SELECT id FROM household_deliveries WHERE distribution_id = :o",
        "ix_household_deliveries_distribution",
    ),
    (
        "community",
        "SELECT count(id) FROM households WHERE org_id = :o AND reached_at IS NOT NULL",
        "ix_households_org_reached",
    ),
)


def test_lookups_that_grew_with_the_tables_are_served_by_an_index(settings: Settings) -> None:
    """On SQLite the planner says which index it takes (on an empty table it takes the
    one that matches); on PostgreSQL the index must exist, and go with the downgrade."""
    for service, query, index in LOOKUPS:
        engine = create_engine(settings.database_url(service))
        try:
            with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    plan = " ".join(
                        str(row[-1])
                        for row in conn.execute(
                            text(f"EXPLAIN QUERY PLAN {query}"), {"o": uuid.uuid4().hex}
                        )
                    )
                    assert f"INDEX {index}" in plan, (query, plan)
                names = {i["name"] for i in sa_inspect(conn).get_indexes(_table_of(query))}
                assert index in names, (service, index, names)
        finally:
            engine.dispose()
    # They go with their migrations.
    for service, revision in (
        ("dispatch", "0019"),
        ("donations", "0013"),
        ("gateway", "0011"),
        ("community", "0012"),
    ):
        url = settings.database_url(service)
        command.downgrade(alembic_config(service, url), revision)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                inspector = sa_inspect(conn)
                tables = set(inspector.get_table_names())
                for owner, query, index in LOOKUPS:
                    table = _table_of(query)
                    # A table a later migration made goes with its indexes.
                    if owner == service and table in tables:
                        assert index not in {i["name"] for i in inspector.get_indexes(table)}
        finally:
            engine.dispose()
        upgrade(service, settings)


# An allocation of a pledge or a need, found through its line (services.dispatch.models
# of_pledge, of_need) since dispatch 0022 dropped the indexes on its own pledge and need.
THROUGH_LINES = (
    (
        "SELECT id FROM allocations WHERE need_line_id IN "
        "(SELECT id FROM need_lines WHERE need_id = :o) AND status = 'reserved'",
        "ix_allocations_need_line",
    ),
    (
        "SELECT id FROM allocations WHERE pledge_line_id IN "
        "(SELECT id FROM supply_lines WHERE pledge_id = :o)",
        "ix_allocations_pledge_line",
    ),
)
DROPPED = {"ix_allocations_pledge_id", "ix_allocations_need_id"}


def test_an_allocation_of_a_pledge_or_a_need_is_found_through_its_line(
    settings: Settings,
) -> None:
    """Each index fewer on allocations is one fewer to write with every allocation a
    matching run proposes: the allocations of a pledge or a need are read through
    their lines' indexes (on SQLite the planner says so), and the downgrade puts the
    dropped indexes back."""
    url = settings.database_url("dispatch")

    def indexes() -> set[str]:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    for query, index in THROUGH_LINES:
                        plan = " ".join(
                            str(row[-1])
                            for row in conn.execute(
                                text(f"EXPLAIN QUERY PLAN {query}"), {"o": uuid.uuid4().hex}
                            )
                        )
                        assert f"INDEX {index}" in plan, (query, plan)
                return {str(i["name"]) for i in sa_inspect(conn).get_indexes("allocations")}
        finally:
            engine.dispose()

    now = indexes()
    assert not now & DROPPED
    assert {index for _query, index in THROUGH_LINES} <= now
    command.downgrade(alembic_config("dispatch", url), "0021")
    assert indexes() >= DROPPED
    upgrade("dispatch", settings)
    assert not indexes() & DROPPED


def _table_of(query: str) -> str:
    return query.split(" FROM ", 1)[1].split()[0]


def test_the_migrations_make_the_schema_the_models_describe(settings: Settings) -> None:
    """Every table, column, index and constraint of the models is made by a migration
    (an index added to a model without one would exist in tests built from the models
    and nowhere in production), on both backends."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shared.migrations import service_metadata

    for service in ("gateway", "donations", "dispatch", "community"):
        engine = create_engine(settings.database_url(service))
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                drift = compare_metadata(context, service_metadata(service))
        finally:
            engine.dispose()
        assert drift == [], (service, drift)
