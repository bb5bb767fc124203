"""One Alembic history per service, run the same way for all of them.

Each service keeps its revisions in ``services/<name>/migrations``; that folder's
env.py only names the service and calls :func:`run_migrations`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from shared.config import Settings
from shared.db import make_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def service_metadata(service: str) -> MetaData:
    module = importlib.import_module(f"services.{service}.models")
    metadata: MetaData = module.Base.metadata
    return metadata


def alembic_config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, settings.database_url(service)), revision)


def run_migrations(service: str) -> None:
    """The body of every service's env.py."""
    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url") or Settings.from_env().database_url(service)
    metadata = service_metadata(service)
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            literal_binds=True,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
