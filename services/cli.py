"""``aidlink``: the operator's command line."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from shared.config import SERVICES, Settings


@click.group()
def main() -> None:
    """Operate an aidlink installation (reads the same environment as the services)."""


@main.command()
@click.option(
    "--service",
    type=click.Choice(SERVICES),
    multiple=True,
    help="Only this service (repeatable); default all.",
)
@click.option("--revision", default="head", show_default=True)
def migrate(service: tuple[str, ...], revision: str) -> None:
    """Bring each service's database to the latest schema."""
    from shared.migrations import upgrade
    from shared.taskqueue import prepare_broker

    settings = Settings.from_env()
    prepare_broker(settings)
    for name in service or SERVICES:
        click.echo(f"migrating {name} ({_redact(settings.database_url(name))})")
        upgrade(name, settings, revision)
    click.echo("databases are up to date")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group()
def demo() -> None:
    """Demo data for a new installation."""


@demo.command("load")
def demo_load() -> None:
    """Register demo organisations, each with a user (password: demo-password), their
    pledges and needs, the demo community's buildings, households, people, order
    rounds, deliveries and cases, and its helpers, requests for help, sessions and
    hotline calls; skips what is already there."""
    from services.demo import load_demo_ledger
    from services.demo_community import DEMO_COMMUNITY, load_demo_community
    from services.demo_help import HELPERS, load_demo_help
    from services.gateway.auth.admin import DEMO_ACCOUNTS, DEMO_PASSWORD, demo_orgs, load_demo

    settings = Settings.from_env()
    app = _service_app("gateway")
    with app.app_context():
        created = load_demo(app.extensions["aidlink"])
        orgs = demo_orgs(app.extensions["aidlink"])
        inside = load_demo_community(
            settings, app.extensions["aidlink"], orgs[DEMO_COMMUNITY][0], DEMO_PASSWORD
        )
        helping = load_demo_help(
            settings, app.extensions["aidlink"], orgs[DEMO_COMMUNITY][0], DEMO_PASSWORD
        )
    ledger = load_demo_ledger(settings, orgs)
    click.echo(
        f"demo data: {created} organisation(s) registered, "
        f"{len(DEMO_ACCOUNTS) - created} already there; "
        f"{ledger.pledges} pledge(s) and {ledger.needs} need(s) added; "
        f"community: {inside.buildings} building(s), {inside.households} household(s), "
        f"{inside.orders} household order(s), {inside.deliveries} delivery(ies) and "
        f"{inside.cases} case(s) added; "
        f"help: {helping.helpers} helper(s), {helping.requests} request(s), "
        f"{helping.sessions} session(s) and {helping.calls} hotline call(s) added"
    )
    if created or inside.people or helping.helpers:
        click.echo(f"demo sign-ins (password {DEMO_PASSWORD!r}):")
    if created:
        for account in DEMO_ACCOUNTS:
            click.echo(f"  {account['email']:<34} {account['organisation']['kind']}")
    for person in inside.people:
        click.echo(f"  {person['email']:<34} community {person['role']}")
    if helping.helpers:
        for person in HELPERS:
            click.echo(f"  {person['email']:<34} helper ({', '.join(person['kinds'])})")


@main.group()
def admin() -> None:
    """Administer users."""


@admin.command("create")
@click.option("--email", required=True, help="The admin's email, used to sign in.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="AIDLINK_ADMIN_PASSWORD",
    help="At least 10 characters; prompted for when not given (or AIDLINK_ADMIN_PASSWORD).",
)
@click.option("--name", default="Administrator", show_default=True)
def admin_create(email: str, password: str, name: str) -> None:
    """Make an admin (who is also a coordinator) on a new install. Running it again for
    the same email changes nothing."""
    from marshmallow import ValidationError

    from services.gateway.auth.admin import create_admin

    app = _service_app("gateway")
    with app.app_context():
        try:
            user, created = create_admin(
                app.extensions["aidlink"], email=email, password=password, name=name
            )
        except ValidationError as exc:
            messages = exc.normalized_messages()
            detail = "; ".join(f"--{field}: {' '.join(msgs)}" for field, msgs in messages.items())
            raise click.UsageError(detail) from None
    if created:
        click.echo(f"admin {user.email} created ({user.id}); sign in at /api/v1/auth/login")
    else:
        click.echo(f"{user.email} already exists; nothing changed")


@main.group()
def events() -> None:
    """Inspect the event pipeline."""


@events.command("status")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def events_status(as_json: bool) -> None:
    """Outbox backlog and dead letters per service; per producer and subscriber, the
    last event sent and taken in, how far behind, and what the catch-up sent again."""
    from sqlalchemy import func, select

    from services.invariants import Databases, delivery
    from shared.web import runtime as current_runtime

    settings = Settings.from_env()
    services: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        app = _service_app(name)
        with app.app_context():
            rt = current_runtime()
            with rt.session_factory() as session:
                dead = session.scalar(select(func.count()).select_from(rt.inbox.dead_letters))
            services[name] = {"outbox_backlog": rt.outbox.backlog(), "dead_letters": dead}
            rt.dispose()
    dbs = Databases(settings)
    try:
        pairs = delivery(dbs)
    finally:
        dbs.dispose()
    if as_json:
        json.dump(
            {
                "services": services,
                "delivery_bound_seconds": settings.event_delivery_bound,
                "delivery": [pair.as_dict() for pair in pairs],
            },
            sys.stdout,
            indent=2,
        )
        click.echo()
        return
    click.echo(f"{'service':<12}{'outbox backlog':>16}{'dead letters':>14}")
    for name, figures in services.items():
        click.echo(f"{name:<12}{figures['outbox_backlog']:>16}{figures['dead_letters']:>14}")
    click.echo()
    click.echo(
        f"events, producer -> subscriber (delivery bound {settings.event_delivery_bound:g} s):"
    )
    for pair in pairs:
        click.echo(f"  {pair.producer} -> {pair.subscriber}")
        click.echo(f"    last sent     {_when(pair.last_sent_at)}  {pair.last_sent_type or ''}")
        click.echo(
            f"    last applied  {_when(pair.last_applied_at)}  {pair.last_applied_type or ''}"
        )
        behind = f"{pair.behind} event(s)"
        if pair.behind:
            behind += f", the oldest {pair.behind_seconds():.0f} s ago"
        if pair.late:
            behind += f", {len(pair.late)} past the bound"
        click.echo(f"    behind        {behind}; unconfirmed {pair.unconfirmed}")
        recovered = f"{pair.recovered} event(s) the broker had lost"
        if pair.last_recovered_at is not None:
            recovered += f", the last at {_when(pair.last_recovered_at)}"
        click.echo(f"    recovered     {recovered} (the catch-up sent {pair.resent} copies again)")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "never"


@main.command("check-invariants")
@click.option(
    "--settle",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for events in flight to be handled before checking.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def check_invariants(settle: float, as_json: bool) -> None:
    """Check the saga's invariants across every service's database; exit status 1
    when any is broken."""
    from services.invariants import check

    report = check(Settings.from_env(), settle=settle)
    if as_json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        click.echo()
    else:
        counted = ", ".join(f"{n} {label}" for label, n in report.counts.items())
        click.echo(f"checked {counted}")
        if not report.settled:
            waiting = ", ".join(f"{k} {v}" for k, v in report.in_flight.items())
            click.echo(
                f"still in flight after {settle:g} s: {waiting}; rules that need "
                "the system at rest may report what is only in flight"
            )
        behind = sum(pair.behind for pair in report.delivery)
        recovered = ", ".join(
            f"{pair.producer}->{pair.subscriber} {pair.recovered}"
            for pair in report.delivery
            if pair.recovered
        )
        click.echo(
            f"events: {behind} not yet taken in by their subscribers; recovered by catch-up: "
            f"{recovered or 'none'}"
        )
        for violation in report.violations:
            records = " ".join(f"{k}={v}" for k, v in violation.records.items())
            click.echo(f"VIOLATED {violation.invariant}: {violation.detail} [{records}]")
        if report.clean:
            click.echo("all invariants hold")
        else:
            click.echo(f"{len(report.violations)} violation(s)")
    if not report.clean:
        sys.exit(1)


@main.group("import")
def import_group() -> None:
    """Import data from spreadsheets."""


@import_group.command("pledges")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--org", "org_id", required=True, type=click.UUID, help="The donor organisation's id."
)
@click.option(
    "--mode",
    type=click.Choice(["all_or_nothing", "valid_rows"]),
    default="all_or_nothing",
    show_default=True,
    help="Import only if every row is valid, or import the valid rows and list the others.",
)
@click.option(
    "--language",
    type=click.Choice(["zh", "en"]),
    default="en",
    show_default=True,
    help="Language of the error messages.",
)
@click.option("--origin-region", help="Shipping region code for rows that name none.")
@click.option("--origin-address", help="Shipping address for rows that take --origin-region.")
def import_pledges(
    file: Path,
    org_id: uuid.UUID,
    mode: str,
    language: str,
    origin_region: str | None,
    origin_address: str | None,
) -> None:
    """Import pledges from a CSV or XLSX FILE, as POST /api/v1/pledges/imports does, with a
    progress bar. Columns: see GET /api/v1/pledges/imports/template.xlsx. A file already
    imported for the organisation is not imported again. Exits 1 if the import failed."""
    from services.donations.imports import service as imports
    from services.donations.models import ImportJob, Organisation
    from shared.errors import DomainError

    app = _service_app("donations")
    rt = app.extensions["aidlink"]
    with app.app_context():
        with rt.session_factory() as session:
            org = session.get(Organisation, org_id)
        if org is None:
            raise click.UsageError(f"--org: the donations service knows no organisation {org_id}")
        if org.status not in ("pending", "verified"):
            raise click.UsageError(f"--org: {org.name} is {org.status}; it cannot pledge")
        defaults = {"origin_region": origin_region, "origin_address": origin_address}
        upload = imports.Upload(
            org_id=org_id,
            filename=file.name,
            content=file.read_bytes(),
            mode=mode,
            language=language,
            defaults={key: value for key, value in defaults.items() if value},
        )
        try:
            submitted = imports.submit(rt, upload)
        except DomainError as exc:
            lines = [exc.detail]
            for field, messages in (exc.errors or {}).items():
                lines += [f"  {field}: {m}" for m in messages if m != exc.detail]
            raise click.ClickException("\n".join(lines)) from None
        job = submitted.job
        if submitted.ignored_columns:
            click.echo(f"ignored columns: {', '.join(submitted.ignored_columns)}")
        if submitted.state == "duplicate" and job.status != "queued":
            click.echo(f"{file.name} was imported before as {job.id} ({job.status}).")
            status = job.status
        else:
            with click.progressbar(
                length=job.rows_total or 0, label=f"checking {job.rows_total} rows"
            ) as bar:

                def progressed(done: int, total: int) -> None:
                    bar.update(max(0, done - bar.pos))

                status = imports.ImportRunner(rt, on_progress=progressed).run(job.id) or ""
        with rt.session_factory() as session:
            final = session.get(ImportJob, job.id)
            assert final is not None
            shown = 50
            for error in final.errors[:shown]:
                click.echo(f"row {error['row']}, {error['column']}: {error['message']}")
            if len(final.errors) > shown:
                click.echo(f"... and {len(final.errors) - shown} more")
            click.echo(f"import {final.id}: {final.status}. {final.detail or ''}".rstrip())
    if status != "succeeded":
        sys.exit(1)


@main.group("personal-data")
def personal_data() -> None:
    """A person's data (an individual donor's), on their request."""


def _person(app: Any, org_id: str) -> Any:
    from services.gateway.models import Organisation

    try:
        wanted = uuid.UUID(org_id)
    except ValueError:
        raise click.BadParameter("not an organisation id", param_hint="ORG_ID") from None
    with app.extensions["aidlink"].session_factory() as session:
        org = session.get(Organisation, wanted)
    if org is None:
        raise click.BadParameter(f"no organisation {org_id}", param_hint="ORG_ID")
    return org


@personal_data.command("export")
@click.argument("org_id")
def personal_data_export(org_id: str) -> None:
    """Print, as JSON, everything every service holds of the person ORG_ID and its
    users."""
    import json

    from services.dispatch.allocations.service import donor_personal_data as dispatch_part
    from services.donations.pledges.service import donor_personal_data as donations_part
    from services.gateway.orgs.personal_data import export

    gateway = _service_app("gateway")
    org = _person(gateway, org_id)
    from shared.errors import DomainError

    with gateway.app_context(), gateway.extensions["aidlink"].session_factory() as session:
        try:
            found: dict[str, Any] = {"gateway": export(session, session.merge(org)), "services": []}
        except DomainError as exc:
            raise click.ClickException(exc.detail) from None
    parts: list[tuple[str, Any]] = [("donations", donations_part), ("dispatch", dispatch_part)]
    from services.community.sessions.privacy import personal_data as help_part

    if org.kind == "community_committee":
        from services.community.residents.privacy import everything

        # Its residents' data: households, orders, deliveries, cases; and its people's
        # help (helpers, notes, requests).
        parts.append(("community", lambda s, o: {**everything(s, o), **help_part(s, o)}))
    else:
        parts.append(("community", help_part))
    for name, part in parts:
        app = _service_app(name)
        with app.extensions["aidlink"].session_factory() as session:
            found["services"].append({"service": name, "records": part(session, org.id)})
    click.echo(json.dumps(found, ensure_ascii=False, indent=2, default=str))


@personal_data.command("erase")
@click.argument("org_id")
@click.option("--reason", required=True, help="Why, e.g. the person's request and its date.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def personal_data_erase(org_id: str, reason: str, yes: bool) -> None:
    """Erase the person ORG_ID's data (names, addresses, contacts, e-mails, pickup
    places, uploaded files) here and, through org.erased, in every service; of a
    community committee, its residents' data (org.residents_erased). Quantities stay:
    all totals and the public ledger still add up."""
    from shared.errors import DomainError

    gateway = _service_app("gateway")
    org = _person(gateway, org_id)
    if not yes:
        click.confirm(
            f"Erase the personal data of {org.name} ({org.id})? This cannot be undone", abort=True
        )
    from services.gateway.models import Organisation
    from services.gateway.orgs.personal_data import COMMUNITY_KIND, erase, erase_residents

    rt = gateway.extensions["aidlink"]
    with gateway.test_request_context():
        try:
            with rt.unit_of_work() as session:
                found = session.get(Organisation, org.id)
                # A community committee is not a person: its residents' data goes.
                if found is not None and found.kind == COMMUNITY_KIND:
                    erase_residents(session, rt.outbox, found, reason)
                else:
                    erase(session, rt.outbox, found, reason)
        except DomainError as exc:
            raise click.ClickException(exc.detail) from None
    rt.dispose()
    event = "org.residents_erased" if org.kind == "community_committee" else "org.erased"
    click.echo(f"erased {org.id}; the services follow through {event}")


def _service_app(name: str) -> Any:
    import importlib

    return importlib.import_module(f"services.{name}.app").create_app()


if __name__ == "__main__":
    main()
