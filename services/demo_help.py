"""Help from people's time in the demo, for ``aidlink demo load``: two fictional helpers
of the demo community's organisation (a counsellor who signs in with the demo password,
and the community's social worker), verified, with weekly hours; five fictional
requests for help made through the public form; a schedule the
coordinators' office approved, so the helpers have sessions to confirm; and the
organisation's hotline with the last two hours' calls logged.

Everything is written through the community service's own service layer, as its API
would write it. An organisation that already has helpers is left as it is, so loading
again adds nothing.
"""

# ruff: noqa: RUF001 (the fictional requests are written with Chinese punctuation)

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from shared.config import Settings
from shared.identity import Identity
from shared.runtime import ServiceRuntime

# The demo's helpers: sign-in (made where missing), name, and what they take.
HELPERS: tuple[dict[str, Any], ...] = (
    {
        "email": "counsellor@demo.aidlink.local",
        "name": "Huang Jing",
        "kinds": ["counsellor"],
        "topics": ["anxiety", "grief", "medical_worker", "patient_family"],
        "languages": ["zh", "en"],
        "daily_limit": 4,
        "hours": ("09:00", "17:00"),
        "qualification": ("national counsellor certificate, level 2", "No. 2019-0312 (demo)"),
    },
    {
        "email": "socialworker@demo.aidlink.local",
        "name": "Chen Li",
        "kinds": ["social_worker"],
        "topics": ["anxiety", "child_care", "patient_family", "other"],
        "languages": ["zh"],
        "daily_limit": 3,
        "hours": ("14:00", "20:00"),
        "qualification": ("social worker, intermediate", "No. 2018-2207 (demo)"),
    },
)

# Fictional requests through the public form: topic, urgency, group, languages, text.
REQUESTS: tuple[tuple[str, str, str | None, list[str], str], ...] = (
    ("medical_worker", "urgent", "medical_staff", ["zh"], "连续值夜班三周，睡不着。"),
    ("patient_family", "soon", "patient_family", ["zh"], "父亲在方舱医院，家里只剩我和孩子。"),
    ("grief", "soon", None, ["zh"], "奶奶上个月去世了，一直没能好好告别。"),
    ("child_care", "routine", None, ["zh"], "孩子在家上网课，情绪很差。"),
    ("anxiety", "routine", None, ["en"], "Stuck alone in my flat for weeks, worrying all day."),
)

# The hotline the demo organisation runs, and a morning's calls: category, minutes.
HOTLINE = {"name": "Community care line", "phone": "027-8888 0000", "languages": ["zh"]}
CALLS: tuple[tuple[str, int], ...] = (
    ("information", 3),
    ("information", 5),
    ("counselling", 18),
    ("information", 2),
    ("emergency", 6),
    ("other", 4),
)


@dataclass
class DemoHelp:
    helpers: int = 0
    requests: int = 0
    sessions: int = 0
    calls: int = 0


def load_demo_help(
    settings: Settings, gateway: ServiceRuntime, org_id: uuid.UUID, password: str
) -> DemoHelp:
    """The demo's help of the organisation ``org_id`` (its helpers made users of it in
    ``gateway``, with ``password``), unless it already has helpers."""
    from services.community.app import create_app
    from services.community.models import Helper
    from services.community.sessions import service as sessions
    from services.demo_community import add_people

    added = DemoHelp()
    app = create_app(settings)
    with app.app_context():
        rt: ServiceRuntime = app.extensions["aidlink"]
        try:
            with rt.session_factory() as session:
                if session.scalar(select(Helper.id).where(Helper.org_id == org_id).limit(1)):
                    return added
            users = add_people(gateway, org_id, password, HELPERS)
            office = Identity(via="system")
            rule = settings.help_priority_groups
            with rt.unit_of_work() as session:
                for person in HELPERS:
                    start, end = (time.fromisoformat(t) for t in person["hours"])
                    me = Identity(
                        user_id=users[person["email"]],
                        org_id=org_id,
                        roles=frozenset({"recipient"}),
                        org_status="verified",
                        via="session",
                    )
                    kind, evidence = person["qualification"]
                    helper = sessions.register_helper(
                        session,
                        me,
                        {
                            "name": person["name"],
                            "kinds": person["kinds"],
                            "topics": person["topics"],
                            "languages": person["languages"],
                            "daily_limit": person["daily_limit"],
                            "timezone": "Asia/Shanghai",
                            "availability": [
                                {"weekday": day, "start": start, "end": end} for day in range(6)
                            ],
                            "qualifications": [{"kind": kind, "evidence": evidence}],
                        },
                    )
                    sessions.decide_helper(session, office, helper.id, "verified", None)
                    added.helpers += 1
                for number, (topic, urgency, group, languages, text) in enumerate(REQUESTS):
                    sessions.ask_for_help(
                        session,
                        Identity(),
                        {
                            "topic": topic,
                            "urgency": urgency,
                            "priority_group": group,
                            "languages": languages,
                            "text": text,
                            "contact": f"+86 139 0000 {number:04d}",
                        },
                    )
                    added.requests += 1
                # Scheduled from the next full hour, so every session lies ahead.
                now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                run = sessions.preview(session, office, rule, now=now + timedelta(hours=1))
                added.sessions = len(sessions.approve(session, office, run.id))
            added.calls = _hotline(rt, org_id, users[HELPERS[1]["email"]])
        finally:
            rt.dispose()
    return added


def _hotline(rt: ServiceRuntime, org_id: uuid.UUID, operator: uuid.UUID) -> int:
    """The organisation's hotline, set up by the coordinators' office, and the last
    hours' calls, logged by its operator (callers from the community itself)."""
    from services.community.hotlines import service as hotlines
    from services.community.models import Organisation

    member = Identity(
        user_id=operator,
        org_id=org_id,
        roles=frozenset({"recipient"}),
        org_status="verified",
        via="session",
    )
    with rt.unit_of_work() as session:
        community = session.get(Organisation, org_id)
        assert community is not None
        hotline = hotlines.create_hotline(
            session,
            Identity(via="system"),
            {**HOTLINE, "org_id": org_id, "region": community.region[:6]},
        )
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        for number, (category, minutes) in enumerate(CALLS):
            hotlines.log_call(
                session,
                member,
                hotline.id,
                {
                    "category": category,
                    "community_org_id": org_id,
                    "minutes": minutes,
                    "at": now - timedelta(minutes=20 * (len(CALLS) - number)),
                },
            )
    return len(CALLS)
