"""``aidlink``: the operator's command line."""

from __future__ import annotations

import json
import sys
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


DEMO_ORGANISATIONS: list[dict[str, Any]] = [
    {
        "name": "Hubei Charity Federation",
        "kind": "coordinator_office",
        "region": "4201",
        "address": "Wuhan, Hubei",
    },
    {
        "name": "Shenzhen One Foundation",
        "kind": "foundation",
        "region": "4403",
        "address": "Futian District, Shenzhen",
    },
    {
        "name": "Wuhan Union Hospital",
        "kind": "hospital",
        "region": "420103",
        "address": "1277 Jiefang Avenue, Jianghan District, Wuhan",
    },
    {
        "name": "Jinyintan Hospital",
        "kind": "hospital",
        "region": "420107",
        "address": "1 Yintan Road, Dongxihu District, Wuhan",
    },
    {
        "name": "Baibuting Community Committee",
        "kind": "community_committee",
        "region": "420102",
        "address": "Jiang'an District, Wuhan",
    },
    {
        "name": "Jiuzhou Logistics",
        "kind": "logistics_company",
        "region": "4201",
        "address": "Wuhan, Hubei",
    },
]


@demo.command("load")
def demo_load() -> None:
    """Register the demo organisations (skips those already there)."""
    from sqlalchemy import select

    from services.gateway.app import create_app
    from services.gateway.models import Organisation
    from services.gateway.orgs import register_organisation

    app = create_app()
    rt = app.extensions["aidlink"]
    created = 0
    with app.app_context():
        for org in DEMO_ORGANISATIONS:
            with rt.unit_of_work() as session:
                exists = session.scalar(
                    select(Organisation.id).where(Organisation.name == org["name"])
                )
                if exists is None:
                    register_organisation(session=session, outbox=rt.outbox, data=org)
                    created += 1
    click.echo(
        f"demo data: {created} organisation(s) registered, "
        f"{len(DEMO_ORGANISATIONS) - created} already there"
    )


@main.group()
def events() -> None:
    """Inspect the event pipeline."""


@events.command("status")
def events_status() -> None:
    """Outbox backlog and dead letters per service."""
    from sqlalchemy import func, select

    from shared.web import runtime as current_runtime

    report = {}
    for name in SERVICES:
        app = _service_app(name)
        with app.app_context():
            rt = current_runtime()
            with rt.session_factory() as session:
                dead = session.scalar(select(func.count()).select_from(rt.inbox.dead_letters))
            report[name] = {"outbox_backlog": rt.outbox.backlog(), "dead_letters": dead}
    json.dump(report, sys.stdout, indent=2)
    click.echo()


def _service_app(name: str) -> Any:
    import importlib

    return importlib.import_module(f"services.{name}.app").create_app()


if __name__ == "__main__":
    main()
