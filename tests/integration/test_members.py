"""An organisation's members through the API: its admin invites people by e-mail, they
join with the one-time link, the admin changes their roles and removes them (their
sign-ins end, and a community ends their appointments)."""

from __future__ import annotations

import uuid

from tests.support.auth import PASSWORD, admin, coordinator, login, register, verified
from tests.support.community import community, member, post
from tests.support.stack import Stack, eventually


def test_an_admin_invites_a_member_who_joins_and_is_then_changed_and_removed(
    stack: Stack,
) -> None:
    from services.gateway.models import AuditEntry, Invitation

    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    stranger = register(client, kind="hospital")
    invitations = f"/api/v1/orgs/{hospital.org_id}/invitations"

    # The first user manages the members.
    me = client.get("/api/v1/auth/me", headers=hospital.headers).json
    assert sorted(me["roles"]) == ["org_admin", "recipient"]

    # Only roles of a hospital; not someone else's organisation.
    wrong = client.post(
        invitations,
        json={"email": "nurse@example.org", "roles": ["donor"]},
        headers=hospital.headers,
    )
    assert wrong.status_code == 422 and "roles" in wrong.json["errors"]
    refused = client.post(
        invitations,
        json={"email": "nurse@example.org", "roles": ["recipient"]},
        headers=stranger.headers,
    )
    assert refused.status_code == 403

    made = client.post(
        invitations,
        json={"email": "Nurse@Example.org", "name": "Nurse Li", "roles": ["recipient"]},
        headers=hospital.headers,
    )
    assert made.status_code == 201, made.json
    token = made.json["token"]
    assert made.json["link"].endswith(f"/join/{token}")
    assert made.json["email"] == "nurse@example.org"
    # Only the token's digest is kept; the list never shows it again.
    with stack.runtime("gateway").session_factory() as session:
        kept = session.get(Invitation, uuid.UUID(made.json["id"]))
        assert kept is not None and token not in kept.token_hash
    listed = client.get(invitations, headers=hospital.headers).json["items"]
    assert [i["email"] for i in listed] == ["nurse@example.org"] and "token" not in listed[0]
    assert client.get(invitations, headers=chief.headers).status_code == 200
    assert client.get(invitations, headers=stranger.headers).status_code == 403

    preview = client.post("/api/v1/auth/invitations/preview", json={"token": token})
    assert preview.status_code == 200
    assert preview.json["email"] == "nurse@example.org" and not preview.json["has_account"]

    # The person joins with the link, and signs in as a member.
    joined = client.post(
        "/api/v1/auth/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert joined.status_code == 201, joined.json
    assert joined.json["roles"] == ["recipient"] and joined.json["org_id"] == hospital.org_id
    nurse_id = joined.json["user_id"]
    again = client.post(
        "/api/v1/auth/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert again.status_code == 422 and again.json["errors"]["token"]
    nurse_tokens = login(client, "nurse@example.org")
    nurse = {"Authorization": f"Bearer {nurse_tokens['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=nurse).json["roles"] == ["recipient"]
    members = f"/api/v1/orgs/{hospital.org_id}/members"
    listed = client.get(members, headers=hospital.headers).json["items"]
    assert {(m["email"], tuple(m["roles"])) for m in listed} == {
        (hospital.email, ("org_admin", "recipient")),
        ("nurse@example.org", ("recipient",)),
    }
    assert client.get(members, headers=chief.headers).status_code == 200
    assert client.get(members, headers=stranger.headers).status_code == 403
    # A member who is not an admin manages no one, nor reads the others' addresses.
    assert client.get(members, headers=nurse).status_code == 403
    assert (
        client.post(
            invitations, json={"email": "x@example.org", "roles": ["recipient"]}, headers=nurse
        ).status_code
        == 403
    )
    assert client.get(invitations, headers=nurse).status_code == 403

    # Roles change at once; the last admin keeps being one.
    member_url = f"/api/v1/orgs/{hospital.org_id}/members/{nurse_id}"
    promoted = client.put(
        member_url, json={"roles": ["recipient", "org_admin"]}, headers=hospital.headers
    )
    assert promoted.status_code == 200, promoted.json
    assert sorted(client.get("/api/v1/auth/me", headers=nurse).json["roles"]) == [
        "org_admin",
        "recipient",
    ]
    assert client.put(member_url, json={"roles": ["recipient"]}, headers=nurse).status_code == 200
    last = client.put(
        f"/api/v1/orgs/{hospital.org_id}/members/{hospital.user_id}",
        json={"roles": ["recipient"]},
        headers=hospital.headers,
    )
    assert last.status_code == 409 and last.json["type"].endswith("last-admin")

    # Removed: the member's sign-in ends at once and they can no longer sign in.
    assert client.delete(member_url, headers=nurse).status_code == 403
    assert client.delete(member_url, headers=hospital.headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=nurse).status_code == 401
    gone = client.post(
        "/api/v1/auth/login", json={"email": "nurse@example.org", "password": PASSWORD}
    )
    assert gone.status_code == 403
    assert client.delete(member_url, headers=hospital.headers).status_code == 404

    # Every change is in the audit log, without the token.
    with stack.runtime("gateway").session_factory() as session:
        actions = [
            e.action
            for e in session.query(AuditEntry).filter(AuditEntry.action.startswith("member."))
        ]
        assert {"member.invite", "member.join", "member.roles", "member.remove"} <= set(actions)
        assert token not in str([(e.before, e.after) for e in session.query(AuditEntry).all()])


def test_an_invitation_to_someone_with_an_account_takes_its_password(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    first = verified(client, boss, kind="hospital")
    second = verified(client, boss, kind="hospital")
    made = client.post(
        f"/api/v1/orgs/{second.org_id}/invitations",
        json={"email": first.email, "roles": ["recipient"]},
        headers=second.headers,
    ).json
    wrong = client.post(
        "/api/v1/auth/invitations/accept",
        json={"token": made["token"], "password": "not-the-password"},
    )
    assert wrong.status_code == 422 and wrong.json["errors"]["password"]
    joined = client.post(
        "/api/v1/auth/invitations/accept", json={"token": made["token"], "password": PASSWORD}
    )
    assert joined.status_code == 201, joined.json
    me = client.get("/api/v1/auth/me", headers=first.headers).json
    assert {m["org_id"] for m in me["memberships"]} == {first.org_id, second.org_id}
    # A withdrawn invitation no longer works.
    other = client.post(
        f"/api/v1/orgs/{second.org_id}/invitations",
        json={"email": "late@example.org", "roles": ["recipient"]},
        headers=second.headers,
    ).json
    withdrawn = client.delete(
        f"/api/v1/orgs/{second.org_id}/invitations/{other['id']}", headers=second.headers
    )
    assert withdrawn.status_code == 204
    late = client.post(
        "/api/v1/auth/invitations/accept",
        json={"token": other["token"], "password": PASSWORD, "name": "Late"},
    )
    assert late.status_code == 422


def test_a_community_member_removed_leaves_their_appointments(stack: Stack) -> None:
    from services.community.models import Appointment

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    place = community(stack, client, boss)
    helper = member(stack, client, place.committee, "Helper")
    post(
        client,
        f"{place.base}/appointments",
        {"user_id": helper.user_id, "role": "volunteer", "building_id": place.buildings[1]},
        place.committee,
    )
    assert client.get(f"{place.base}/me", headers=helper.headers).json["roles"] == ["volunteer"]

    removed = client.delete(
        f"/api/v1/orgs/{place.committee.org_id}/members/{helper.user_id}",
        headers=place.committee.headers,
    )
    assert removed.status_code == 204, removed.json
    assert client.get(f"{place.base}/me", headers=helper.headers).status_code == 401

    def ended() -> bool:
        with stack.runtime("community").session_factory() as session:
            return (
                session.query(Appointment)
                .filter(Appointment.user_id == uuid.UUID(helper.user_id))
                .count()
                == 0
            )

    eventually(ended, timeout=60)
    # The other appointments stay.
    with stack.runtime("community").session_factory() as session:
        assert session.query(Appointment).count() == 4
