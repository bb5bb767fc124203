"""Demo pledges and needs for a new installation (``aidlink demo load``).

The demo organisations (services/gateway/auth/admin.py) give what was given to Wuhan in early
2020 and ask for what its hospitals and a residential community lacked, so that a new
installation has supply, demand and, once a coordinator approves a matching run,
allocations and shipments to show. Each service's rows are written through its own
service layer with their events, as the API would write them; a demo organisation that
already has pledges or needs is left as it is, so loading again adds nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from shared.config import Settings
from shared.db import utcnow

SHENZHEN = {"region": "4403", "address": "Futian District, Shenzhen", "lat": 22.52, "lon": 114.05}

# Keyed by the demo user's email (services/gateway/auth/admin.py DEMO_ACCOUNTS).
DEMO_PLEDGES: dict[str, list[dict[str, Any]]] = {
    "donor@demo.aidlink.local": [
        {
            "lines": [
                {
                    "item": "mask",
                    "standard": "GB19083-2010",
                    "quantity": "20",
                    "unit": "box",
                    "pack_size": 500,
                },
                {"item": "mask", "standard": "GB2626-2006", "quantity": "30000", "unit": "piece"},
                {
                    "item": "protective_suit",
                    "standard": "GB19082-2009",
                    "quantity": "2000",
                    "unit": "set",
                },
                {"item": "gloves_exam", "standard": "nitrile", "quantity": "8000", "unit": "pair"},
            ],
            "origin": SHENZHEN,
            "notes": "Medical protective supplies for frontline staff",
        },
        {
            "lines": [
                {"item": "disinfectant_84", "quantity": "600", "unit": "l"},
                {"item": "vegetables", "quantity": "5", "unit": "t", "best_before_days": 10},
            ],
            "origin": SHENZHEN,
            "notes": "For residential communities under closed management",
        },
    ],
}

DEMO_NEEDS: dict[str, list[dict[str, Any]]] = {
    "hospital@demo.aidlink.local": [
        {
            "lines": [
                {
                    "item": "mask",
                    "standards": ["GB19083-2010"],
                    "quantity": "12000",
                    "unit": "piece",
                    "urgency": "critical",
                    "needed_by_days": 2,
                },
                {
                    "item": "protective_suit",
                    "standards": ["GB19082-2009"],
                    "quantity": "1500",
                    "unit": "set",
                    "urgency": "critical",
                    "needed_by_days": 2,
                },
                {
                    "item": "gloves_exam",
                    "quantity": "5000",
                    "unit": "pair",
                    "urgency": "high",
                    "needed_by_days": 5,
                },
            ],
            "beds": 800,
            "location": {
                "region": "420103",
                "address": "1277 Jiefang Avenue, Jianghan District, Wuhan",
                "lat": 30.58,
                "lon": 114.27,
            },
            "notes": "Fever clinic and isolation wards",
        }
    ],
    "jinyintan@demo.aidlink.local": [
        {
            "lines": [
                {
                    "item": "mask",
                    "standards": ["GB19083-2010"],
                    "quantity": "10000",
                    "unit": "piece",
                    "urgency": "critical",
                    "needed_by_days": 1,
                }
            ],
            "beds": 600,
            "location": {"region": "420107", "address": "1 Yintan Road, Dongxihu District, Wuhan"},
            "notes": "Held as a draft until the hospital is verified",
        }
    ],
    "community@demo.aidlink.local": [
        {
            "lines": [
                {
                    "item": "mask",
                    "standards": ["GB2626-2006", "YY/T0969-2013"],
                    "quantity": "20000",
                    "unit": "piece",
                    "urgency": "high",
                    "needed_by_days": 4,
                },
                {
                    "item": "disinfectant_84",
                    "quantity": "300",
                    "unit": "l",
                    "urgency": "normal",
                    "needed_by_days": 7,
                },
                {
                    "item": "vegetables",
                    "quantity": "3000",
                    "unit": "kg",
                    "urgency": "high",
                    "needed_by_days": 3,
                },
            ],
            "people_served": 130000,
            "location": {"region": "420102", "address": "Baibuting, Jiang'an District, Wuhan"},
            "notes": "Deliveries to the community's collection point",
        }
    ],
}


@dataclass(frozen=True)
class DemoLedger:
    pledges: int
    needs: int


def _dated(lines: list[dict[str, Any]], key: str, field: str) -> list[dict[str, Any]]:
    """Lines with ``key`` (days from today) replaced by the date ``field``."""
    today = utcnow().date()
    dated = []
    for line in lines:
        line = dict(line)
        days = line.pop(key, None)
        if days is not None:
            line[field] = today + timedelta(days=days)
        dated.append(line)
    return dated


def load_demo_ledger(settings: Settings, orgs: dict[str, tuple[uuid.UUID, bool]]) -> DemoLedger:
    """Pledge and post the demo supply and demand. ``orgs``: each demo user's email
    with its organisation's id and whether it is verified. Returns what was created."""
    from services.dispatch.app import create_app as create_dispatch
    from services.dispatch.models import Need
    from services.dispatch.needs import service as needs
    from services.donations.app import create_app as create_donations
    from services.donations.models import Pledge
    from services.donations.pledges.service import create_pledge

    pledged = posted = 0
    donations = create_donations(settings)
    with donations.app_context():
        rt = donations.extensions["aidlink"]
        for email, pledges in DEMO_PLEDGES.items():
            if email not in orgs:
                continue
            org_id, _verified = orgs[email]
            with rt.unit_of_work() as session:
                if session.scalar(select(Pledge.id).where(Pledge.org_id == org_id).limit(1)):
                    continue
                for data in pledges:
                    lines = _dated(data["lines"], "best_before_days", "best_before")
                    create_pledge(session, rt.outbox, org_id=org_id, data={**data, "lines": lines})
                    pledged += 1
        rt.dispose()

    dispatch = create_dispatch(settings)
    with dispatch.app_context():
        rt = dispatch.extensions["aidlink"]
        for email, posts in DEMO_NEEDS.items():
            if email not in orgs:
                continue
            org_id, verified = orgs[email]
            with rt.unit_of_work() as session:
                if session.scalar(select(Need.id).where(Need.org_id == org_id).limit(1)):
                    continue
                for data in posts:
                    lines = _dated(data["lines"], "needed_by_days", "needed_by")
                    needs.create_need(
                        session,
                        rt.outbox,
                        org_id=org_id,
                        org_verified=verified,
                        data={**data, "lines": lines},
                    )
                    posted += 1
        rt.dispose()
    return DemoLedger(pledges=pledged, needs=posted)
