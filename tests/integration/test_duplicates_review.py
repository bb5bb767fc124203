"""Duplicate organisations: flagged on registration and on demand, reviewed by a
coordinator, then merged or dismissed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from services.gateway.duplicates.domain import normalise_name
from services.gateway.models import AuditEntry, DuplicateFlag, Organisation
from tests.support.auth import Account, admin, coordinator, login, register, verify
from tests.support.orgs import count, read_model_org
from tests.support.stack import Stack, eventually

WUHAN_JIANGAN = "420102"
WUHAN_HANYANG = "420105"
WUHAN_WUCHANG = "420106"
YICHANG = "420502"


def _full_width(text: str) -> str:
    """ASCII letters, digits and punctuation as their full-width forms."""
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


# The name with "(有限公司)" appended in full-width parentheses, as typed on a CJK keyboard.
FIRST_HOSPITAL_LTD = "武汉市第一医院" + _full_width("(有限公司)")
FULL_WIDTH_NO_1 = _full_width("WUHAN No.1") + " Hospital"
FULL_WIDTH_UNION_LTD = _full_width("WUHAN UNION") + " Hospital Co., Ltd."


def _coordinator(stack: Stack, client: Any) -> Account:
    boss = admin(stack.apps["gateway"], client)
    return coordinator(client, boss, name="Hubei Relief Coordination Office")


def _queue(client: Any, by: Account, **query: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/duplicates", query_string=query, headers=by.headers)
    assert response.status_code == 200, response.json
    items: list[dict[str, Any]] = response.json["items"]
    return items


def _pair(flag: dict[str, Any]) -> frozenset[str]:
    return frozenset((flag["org"]["id"], flag["candidate"]["id"]))


def _flags_of(client: Any, by: Account, org_id: str, **query: Any) -> list[dict[str, Any]]:
    response = client.get(
        f"/api/v1/orgs/{org_id}/duplicates", query_string=query, headers=by.headers
    )
    assert response.status_code == 200, response.json
    items: list[dict[str, Any]] = response.json["items"]
    return items


def _problem_type(response: Any) -> str:
    return str(response.json["type"]).rsplit("/", 1)[-1]


def _audit_actions(stack: Stack, target_id: str) -> list[str]:
    with stack.runtime("gateway").session_factory() as session:
        return list(
            session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.target_id == target_id)
                .order_by(AuditEntry.at, AuditEntry.id)
            )
        )


def test_names_differing_only_in_width_or_suffix_are_flagged_side_by_side(
    stack: Stack,
) -> None:
    client = stack.client()
    coord = _coordinator(stack, client)
    first = register(
        client,
        name="武汉市第一医院",
        region=WUHAN_JIANGAN,
        name_en="Wuhan No.1 Hospital",
        address="215 Zhongshan Avenue",
        licence_number="12420000441336106A",
    )
    suffixed = register(client, name=FIRST_HOSPITAL_LTD, region=WUHAN_WUCHANG)
    in_yichang = register(client, name="武汉市第一医院", region=YICHANG)
    half_width = register(client, name="Wuhan No.1 Hospital", region=WUHAN_HANYANG)
    full_width = register(client, name=FULL_WIDTH_NO_1, region=WUHAN_JIANGAN)

    # Only coordinators see the queue.
    refused = client.get("/api/v1/duplicates", headers=first.headers)
    assert refused.status_code == 403
    assert refused.mimetype == "application/problem+json"

    queue = _queue(client, coord)
    assert {_pair(flag) for flag in queue} == {
        frozenset((first.org_id, suffixed.org_id)),
        frozenset((half_width.org_id, full_width.org_id)),
    }
    by_suffix = next(f for f in queue if _pair(f) == {first.org_id, suffixed.org_id})
    # The organisation that registered second is the one checked; side by side.
    assert by_suffix["org"]["id"] == suffixed.org_id
    assert by_suffix["org"]["name"] == FIRST_HOSPITAL_LTD
    assert by_suffix["org"]["region"] == WUHAN_WUCHANG
    assert by_suffix["candidate"] == {
        "id": first.org_id,
        "name": "武汉市第一医院",
        "name_zh": None,
        "name_en": "Wuhan No.1 Hospital",
        "kind": "hospital",
        "region": WUHAN_JIANGAN,
        "address": "215 Zhongshan Avenue",
        "status": "pending",
        "licence_number": "12420000441336106A",
        "merged_into_id": None,
        "created_at": first.org["created_at"],
    }
    assert by_suffix["score"] == 1.0
    assert by_suffix["reason"] == "same normalised name in the same city"
    assert by_suffix["status"] == "open"
    assert by_suffix["resolved_at"] is None

    # The same name in another city is another hospital.
    assert _flags_of(client, coord, in_yichang.org_id) == []
    assert [f["id"] for f in _flags_of(client, coord, first.org_id)] == [by_suffix["id"]]
    # The queue narrows to a region, on either side of a pair.
    assert [f["id"] for f in _queue(client, coord, region=WUHAN_WUCHANG)] == [by_suffix["id"]]
    assert _queue(client, coord, region="4205") == []
    assert len(_queue(client, coord, region="4201")) == 2
    # And pages like every list.
    page = client.get("/api/v1/duplicates", query_string={"limit": 1}, headers=coord.headers)
    assert len(page.json["items"]) == 1
    assert page.json["next_cursor"] is not None


def test_dismissed_pair_leaves_the_queue_and_is_not_flagged_again(stack: Stack) -> None:
    client = stack.client()
    coord = _coordinator(stack, client)
    first = register(client, name="Wuhan No.1 Hospital", region=WUHAN_JIANGAN)
    second = register(client, name=FULL_WIDTH_NO_1, region=WUHAN_WUCHANG)
    (flag,) = _queue(client, coord)

    refused = client.post(
        f"/api/v1/duplicates/{flag['id']}/dismiss", json={}, headers=first.headers
    )
    assert refused.status_code == 403

    response = client.post(
        f"/api/v1/duplicates/{flag['id']}/dismiss",
        json={"note": "Two campuses with separate licences"},
        headers=coord.headers,
    )
    assert response.status_code == 200, response.json
    dismissed = response.json
    assert dismissed["status"] == "dismissed"
    assert dismissed["resolved_by"] == coord.user_id
    assert dismissed["resolved_at"] is not None
    assert dismissed["note"] == "Two campuses with separate licences"
    assert _pair(dismissed) == {first.org_id, second.org_id}

    assert _queue(client, coord) == []
    assert [f["id"] for f in _queue(client, coord, status="dismissed")] == [flag["id"]]

    again = client.post(f"/api/v1/duplicates/{flag['id']}/dismiss", headers=coord.headers)
    assert again.status_code == 409
    assert _problem_type(again) == "duplicate-flag-resolved"
    merge = client.post(
        f"/api/v1/duplicates/{flag['id']}/merge",
        json={"keep": first.org_id},
        headers=coord.headers,
    )
    assert merge.status_code == 409

    # Scans keep the decision.
    rescan = client.post(f"/api/v1/orgs/{second.org_id}/duplicates/scan", headers=coord.headers)
    assert rescan.status_code == 200, rescan.json
    assert rescan.json == {"new_flags": 0, "items": []}
    everything = client.post("/api/v1/duplicates/scan", headers=coord.headers)
    assert everything.status_code == 200, everything.json
    assert everything.json["new_flags"] == 0
    assert _queue(client, coord) == []
    assert _audit_actions(stack, flag["id"]) == ["duplicate.dismiss"]

    missing = client.post(
        f"/api/v1/duplicates/{uuid.uuid4()}/dismiss", json={}, headers=coord.headers
    )
    assert missing.status_code == 404


def _insert_flag(stack: Stack, org_id: str, candidate_id: str) -> str:
    with stack.runtime("gateway").unit_of_work() as session:
        flag = DuplicateFlag(
            id=uuid.uuid4(),
            org_id=uuid.UUID(org_id),
            candidate_id=uuid.UUID(candidate_id),
            score=0.9,
            reason="similar name (0.90) in the same city",
        )
        session.add(flag)
        return str(flag.id)


def test_merge_moves_members_revokes_credentials_and_reaches_the_read_model(
    stack: Stack,
) -> None:
    donations = stack.start_worker("donations")
    client = stack.client()
    coord = _coordinator(stack, client)
    kept = register(client, name="Wuhan No.1 Hospital", region=WUHAN_JIANGAN)
    gone = register(client, name=FULL_WIDTH_NO_1, region=WUHAN_WUCHANG)
    # Registered at province level: flagged with both.
    third = register(client, name="Wuhan No.1 Hospital Co., Ltd.", region="42")
    # An unrelated organisation someone flagged with the one to be merged away.
    other = register(client, kind="community_committee", name="Jianghan Road Committee")
    repointed_id = _insert_flag(stack, other.org_id, gone.org_id)
    verify(client, coord, gone.org_id)
    created = client.post(
        "/api/v1/tokens",
        json={"name": "stock sync", "scopes": ["orgs:read"]},
        headers=gone.headers,
    )
    assert created.status_code == 201, created.json
    api_token = {"Authorization": f"Bearer {created.json['token']}"}
    assert client.get(f"/api/v1/orgs/{gone.org_id}", headers=api_token).status_code == 200

    (flag,) = [
        f for f in _flags_of(client, coord, gone.org_id) if _pair(f) == {kept.org_id, gone.org_id}
    ]
    (via_third,) = [
        f for f in _flags_of(client, coord, gone.org_id) if _pair(f) == {third.org_id, gone.org_id}
    ]
    url = f"/api/v1/duplicates/{flag['id']}/merge"

    assert client.post(url, json={"keep": kept.org_id}, headers=kept.headers).status_code == 403
    outsider = client.post(url, json={"keep": third.org_id}, headers=coord.headers)
    assert outsider.status_code == 422
    assert "keep" in outsider.json["errors"]

    response = client.post(
        url, json={"keep": kept.org_id, "note": "Same licence number"}, headers=coord.headers
    )
    assert response.status_code == 200, response.json
    merged = response.json
    assert merged["status"] == "merged"
    assert merged["resolved_by"] == coord.user_id
    assert merged["note"] == "Same licence number"
    sides = {merged["org"]["id"]: merged["org"], merged["candidate"]["id"]: merged["candidate"]}
    assert sides[gone.org_id]["status"] == "merged"
    assert sides[gone.org_id]["merged_into_id"] == kept.org_id

    # The directory says so; the kept organisation is not verified by the merge.
    shown = client.get(f"/api/v1/orgs/{gone.org_id}", headers=coord.headers).json
    assert shown["status"] == "merged"
    assert shown["merged_into_id"] == kept.org_id
    assert client.get(f"/api/v1/orgs/{kept.org_id}", headers=coord.headers).json["status"] == (
        "pending"
    )

    # The old credentials stop working; signing in again acts for the kept organisation.
    assert client.get("/api/v1/auth/me", headers=gone.headers).status_code == 401
    assert client.get(f"/api/v1/orgs/{kept.org_id}", headers=api_token).status_code == 401
    tokens = login(client, gone.email)
    me = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).json
    assert me["organisation"]["id"] == kept.org_id
    assert me["roles"] == ["recipient"]
    assert [(m["org_id"], m["role"]) for m in me["memberships"]] == [(kept.org_id, "recipient")]
    assert client.get("/api/v1/auth/me", headers=kept.headers).status_code == 200

    # The merged organisation's other flags: re-pointed at the kept one, or closed
    # where the kept one is already paired with that organisation.
    assert _flags_of(client, coord, gone.org_id, status="open") == []
    closed = next(f for f in _flags_of(client, coord, third.org_id) if f["id"] == via_third["id"])
    assert closed["status"] == "merged"
    assert gone.org_id in closed["note"]
    (repointed,) = _flags_of(client, coord, other.org_id)
    assert repointed["id"] == repointed_id
    assert repointed["status"] == "open"
    assert _pair(repointed) == {other.org_id, kept.org_id}

    again = client.post(url, json={"keep": kept.org_id}, headers=coord.headers)
    assert again.status_code == 409
    assert _problem_type(again) == "duplicate-flag-resolved"
    stale_id = _insert_flag(stack, gone.org_id, other.org_id)
    stale = client.post(
        f"/api/v1/duplicates/{stale_id}/merge", json={"keep": other.org_id}, headers=coord.headers
    )
    assert stale.status_code == 409
    assert _problem_type(stale) == "organisation-merged"
    assert gone.org_id in stale.json["detail"]

    # Every change is in the audit log.
    assert _audit_actions(stack, gone.org_id)[-1] == "org.merge"
    assert _audit_actions(stack, flag["id"]) == ["duplicate.merge"]
    assert _audit_actions(stack, via_third["id"]) == ["duplicate.close"]
    assert _audit_actions(stack, repointed_id) == ["duplicate.repoint"]
    assert _audit_actions(stack, created.json["id"])[-1] == "token.revoke"
    with stack.runtime("gateway").session_factory() as session:
        moved = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "membership.move")
        ).all()
        # Its member moves; managing the members of the one merged away does not.
        pairs = sorted(((e.before or {}, e.after) for e in moved), key=lambda p: str(p[0]["role"]))
        assert pairs == [
            ({"user_id": gone.user_id, "org_id": gone.org_id, "role": "org_admin"}, None),
            (
                {"user_id": gone.user_id, "org_id": gone.org_id, "role": "recipient"},
                {"user_id": gone.user_id, "org_id": kept.org_id, "role": "recipient"},
            ),
        ]

    # The donations service learns of it from the org.merged event.
    row = eventually(
        lambda: (
            (found := read_model_org(stack.runtime("donations"), gone.org_id)) is not None
            and found.status == "merged"
            and found
        )
    )
    assert str(row.merged_into_id) == kept.org_id, donations.log()


def _bare_org(stack: Stack, name: str, region: str, **columns: Any) -> str:
    """An organisation written straight to the table, as before the name rules matched
    it with anything: no flags, no event."""
    with stack.runtime("gateway").unit_of_work() as session:
        org = Organisation(
            id=uuid.uuid4(),
            name=name,
            normalised_name=normalise_name(name),
            kind="hospital",
            region=region,
            contacts=[],
            status="pending",
            **columns,
        )
        session.add(org)
        return str(org.id)


def test_scan_on_demand_flags_pairs_registered_before_the_rules_matched(stack: Stack) -> None:
    client = stack.client()
    coord = _coordinator(stack, client)
    a = _bare_org(stack, "武汉市第一医院", WUHAN_JIANGAN)
    b = _bare_org(stack, FIRST_HOSPITAL_LTD, WUHAN_WUCHANG)
    c = _bare_org(stack, "Wuhan Union Hospital", WUHAN_JIANGAN)
    d = _bare_org(stack, FULL_WIDTH_UNION_LTD, "4201")
    e = _bare_org(stack, "Wuhan Union Hospital", YICHANG)
    province = _bare_org(stack, "Wuhan Union Hospital", "42")
    _bare_org(stack, "Wuhan Union Hospital", "43")
    assert _queue(client, coord) == []

    scan = client.post(f"/api/v1/orgs/{b}/duplicates/scan", headers=coord.headers)
    assert scan.status_code == 200, scan.json
    assert scan.json["new_flags"] == 1
    (flag,) = scan.json["items"]
    assert (flag["org"]["id"], flag["candidate"]["id"]) == (b, a)
    assert flag["status"] == "open"
    repeat = client.post(f"/api/v1/orgs/{b}/duplicates/scan", headers=coord.headers).json
    assert repeat["new_flags"] == 0
    assert [f["id"] for f in repeat["items"]] == [flag["id"]]

    # The whole directory: one city's pair, and the province-level registration
    # against each city's (a different province's never).
    everything = client.post("/api/v1/duplicates/scan", headers=coord.headers)
    assert everything.status_code == 200, everything.json
    assert everything.json["new_flags"] == 4
    assert everything.json["scanned"] == count(
        stack.runtime("gateway"), Organisation, Organisation.status != "merged"
    )
    assert {_pair(f) for f in _queue(client, coord)} == {
        frozenset((a, b)),
        frozenset((c, d)),
        frozenset((province, c)),
        frozenset((province, d)),
        frozenset((province, e)),
    }
    assert client.post("/api/v1/duplicates/scan", headers=coord.headers).json["new_flags"] == 0

    gone = _bare_org(stack, "Wuhan Union Hospital", WUHAN_WUCHANG, merged_into_id=uuid.UUID(c))
    with stack.runtime("gateway").unit_of_work() as session:
        row = session.get(Organisation, uuid.UUID(gone))
        assert row is not None
        row.status = "merged"
    merged = client.post(f"/api/v1/orgs/{gone}/duplicates/scan", headers=coord.headers)
    assert merged.status_code == 409
    assert _problem_type(merged) == "organisation-merged"
    assert client.post("/api/v1/duplicates/scan", headers=coord.headers).json["new_flags"] == 0
    unknown = client.post(f"/api/v1/orgs/{uuid.uuid4()}/duplicates/scan", headers=coord.headers)
    assert unknown.status_code == 404
    hospital = register(client, name="Jinyintan Hospital", region=WUHAN_JIANGAN)
    refused = client.post("/api/v1/duplicates/scan", headers=hospital.headers)
    assert refused.status_code == 403


def test_registration_reads_only_the_regions_a_duplicate_may_be_in(settings: Any) -> None:
    """The check on registration narrows its read to the city (and the bare province
    code) in SQL, and flags exactly what comparing with the whole province did."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from services.gateway.orgs.service import _near, flag_duplicates

    engine = create_engine(settings.database_url("gateway"))
    name = "武汉市第一医院"

    def hospital(region: str, status: str = "pending") -> Organisation:
        return Organisation(
            name=name,
            normalised_name=normalise_name(name),
            kind="hospital",
            region=region,
            status=status,
        )

    regions = {
        "province": "42",
        "city": "4201",
        "jiangan": WUHAN_JIANGAN,
        "hanyang": WUHAN_HANYANG,
        "yichang": YICHANG,
        "hunan": "43",
        "hunan_city": "4301",
    }
    try:
        with Session(engine) as session:
            orgs = {key: hospital(code) for key, code in regions.items()}
            session.add_all([*orgs.values(), hospital(WUHAN_WUCHANG, status="merged")])
            session.flush()

            # What a Wuchang registration reads: Wuhan's codes and the bare province
            # code, none of Yichang's or Hunan's.
            near = session.scalars(select(Organisation.region).where(_near(WUHAN_WUCHANG)))
            assert sorted(near) == sorted(
                ["42", "4201", WUHAN_JIANGAN, WUHAN_HANYANG, WUHAN_WUCHANG]
            )

            new = hospital(WUHAN_WUCHANG)
            session.add(new)
            session.flush()
            flagged = {flag.candidate_id for flag in flag_duplicates(session, new)}
            # Not Yichang, not Hunan, not the merged one.
            assert flagged == {orgs[k].id for k in ("province", "city", "jiangan", "hanyang")}

            # A registration that names only the province may be a duplicate of any
            # organisation in it, Yichang's included.
            whole = hospital("42")
            session.add(whole)
            session.flush()
            flagged = {flag.candidate_id for flag in flag_duplicates(session, whole)}
            in_hubei = ("province", "city", "jiangan", "hanyang", "yichang")
            assert flagged == {orgs[k].id for k in in_hubei} | {new.id}
            session.rollback()
    finally:
        engine.dispose()
