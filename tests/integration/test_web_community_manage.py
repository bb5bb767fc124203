"""The committee's pages through Flask's test client, over the real community service:
buildings, people and roles, households (seen only as the API shows them: a leader of
building 1 never sees building 2's), order rounds, the stock split over households and
written off, and cases (intake, assignment, reopening, counts, a social worker's hours).
Each page renders for its role and is refused to the others; each form's errors name
the field, in English and Chinese."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.integration.test_web_community import _error, _place, _signed_in, _token
from tests.integration.test_web_community import _summary as _raw_summary
from tests.support.auth import register
from tests.support.community import member, post
from tests.support.community_stock import receive
from tests.support.stack import Stack


def _summary(page: bytes) -> str:
    """The error summary's text, each label followed by its colon."""
    return re.sub(r"\s+([:·])", r"\1", re.sub(r"\s+", " ", _raw_summary(page)))


def _text(page: Any) -> str:
    return html.unescape(page.get_data(True))


def test_the_committee_keeps_buildings_people_households_and_rounds(stack: Stack) -> None:
    client, place, made = _place(stack)
    first, second = place.buildings
    committee = _signed_in(stack, place.committee)

    # The committee's part of the home page.
    home = committee.get("/community").data
    for part in ("buildings", "people", "households", "rounds", "stock", "case-summary"):
        assert f'data-manage="{part}"'.encode() in home

    # Buildings: listed with their households; a name already taken is named at its field.
    page = committee.get("/community/buildings")
    token = _token(page)
    assert f'data-building="{first}"'.encode() in page.data
    assert "6 household(s)" in _text(page)
    empty = committee.post("/community/buildings", data={"csrf_token": token, "name": ""})
    assert empty.status_code == 422
    assert _error(empty.data, "name")
    assert "Name:" in _summary(empty.data)
    taken = committee.post("/community/buildings", data={"csrf_token": token, "name": "Building 1"})
    assert taken.status_code == 409
    assert "already has a building called Building 1" in _error(taken.data, "name")
    added = committee.post(
        "/community/buildings", data={"csrf_token": token, "name": "Building 3", "area": "West"}
    )
    assert added.status_code == 302
    assert "Building 3 is added." in _text(committee.get(added.location))

    # People and roles: a leader without a building is refused at the building's field;
    # a member appointed volunteer of building 2, then the appointment ended.
    page = committee.get("/community/people")
    token = _token(page)
    assert page.data.count(b'class="appointment"') == 4
    newcomer = member(stack, client, place.committee, "Zhao Lei")
    wrong = committee.post(
        "/community/people",
        data={"csrf_token": token, "user_id": newcomer.user_id, "role": "building_leader"},
    )
    assert wrong.status_code == 422
    assert _error(wrong.data, "building_id") == "Choose the building for this role."
    assert "Building:" in _summary(wrong.data)
    committee.set_cookie("aidlink_lang", "zh")
    wrong = committee.post(
        "/community/people",
        data={"csrf_token": token, "user_id": newcomer.user_id, "role": "social_worker"},
    )
    assert wrong.status_code == 422
    assert _error(wrong.data, "hours_per_day").startswith("请填写每天可投入的小时数")
    committee.set_cookie("aidlink_lang", "en")
    done = committee.post(
        "/community/people",
        data={
            "csrf_token": token,
            "user_id": newcomer.user_id,
            "role": "volunteer",
            "building_id": second,
        },
    )
    assert done.status_code == 302
    page = committee.get("/community/people")
    volunteers = re.findall(rb'data-appointment="([^"]+)" data-role="volunteer"', page.data)
    assert len(volunteers) == 2
    ended = committee.post(
        f"/community/people/{volunteers[-1].decode()}/end", data={"csrf_token": _token(page)}
    )
    assert ended.status_code == 302
    assert len(re.findall(rb'data-role="volunteer"', committee.get("/community/people").data)) == 1

    # Households: the committee sees every building's, with the flags.
    page = committee.get("/community/households")
    text = _text(page)
    assert f'data-building="{first}"' in text and f'data-building="{second}"' in text
    assert "elderly, living alone" in text and "Call before knocking; deaf" in text

    # A leader sees their building's households only; building 2's are refused, and a
    # household of building 2 is answered as missing.
    leader = _signed_in(stack, place.leaders[0])
    assert f'data-households="{first}"'.encode() in leader.get("/community").data
    theirs = leader.get("/community/households")
    assert f'data-building="{first}"'.encode() in theirs.data
    assert f'data-building="{second}"'.encode() not in theirs.data
    assert leader.get(f"/community/households?building={second}").status_code == 403
    other_household = place.households[second][0]
    assert leader.get(f"/community/households/{other_household}").status_code == 404
    # Neither the volunteer, the social worker nor another organisation sees any.
    for narrow in (place.volunteer, place.social_worker):
        refused = _signed_in(stack, narrow).get("/community/households")
        assert refused.status_code == 403
        assert "Call before knocking" not in _text(refused)
    stranger = _signed_in(stack, register(client, kind="hospital"))
    for url in ("/community/households", "/community/buildings", "/community/people"):
        assert stranger.get(url).status_code == 403

    # The leader records a household: errors named at their fields, in both languages.
    page = leader.get(f"/community/households/new?building={first}")
    token = _token(page)
    assert f'<option value="{second}"'.encode() not in page.data
    wrong = leader.post(
        "/community/households/new",
        data={"csrf_token": token, "building_id": first, "unit": "3", "people": "0"},
    )
    assert wrong.status_code == 422
    assert _error(wrong.data, "room") == "Missing data for required field."
    assert _error(wrong.data, "people")
    summary = _summary(wrong.data)
    assert "Room:" in summary and "People:" in summary
    leader.set_cookie("aidlink_lang", "zh")
    wrong = leader.post(
        "/community/households/new",
        data={"csrf_token": token, "building_id": first, "unit": "3", "people": "2"},
    )
    assert "房号" in _summary(wrong.data)
    leader.set_cookie("aidlink_lang", "en")
    twice = leader.post(
        "/community/households/new",
        data={"csrf_token": token, "building_id": first, "unit": "1", "room": "101", "people": "2"},
    )
    assert twice.status_code == 409
    assert "already has a household at that unit and room" in _error(twice.data, "room")
    made_one = leader.post(
        "/community/households/new",
        data={
            "csrf_token": token,
            "building_id": first,
            "unit": "3",
            "room": "502",
            "people": "2",
            "flags": ["pregnancy", "quarantine"],
            "note": "Leave at the door",
        },
    )
    assert made_one.status_code == 302
    listed = _text(leader.get(made_one.location))
    assert "Household 3-502 is recorded." in listed
    assert "pregnancy" in listed and "in quarantine" in listed
    new_id = re.search(r'data-household="3-502" data-id="([^"]+)"', listed).group(1)  # type: ignore[union-attr]

    # Edited: the form shows it as it is; a stale version is shown again, not overwritten.
    page = leader.get(f"/community/households/{new_id}")
    token = _token(page)
    assert b'value="pregnancy" checked' in page.data
    version = re.search(rb'name="version" value="(\d+)"', page.data).group(1).decode()  # type: ignore[union-attr]
    fields = {"csrf_token": token, "building_id": first, "unit": "3", "room": "502"}
    saved = leader.post(
        f"/community/households/{new_id}",
        data={**fields, "people": "3", "flags": ["pregnancy"], "version": version},
    )
    assert saved.status_code == 302
    stale = leader.post(
        f"/community/households/{new_id}",
        data={**fields, "people": "5", "version": version},
    )
    assert stale.status_code == 409
    assert "Someone changed this household meanwhile" in _text(stale)
    bad = leader.post(
        f"/community/households/{new_id}",
        data={**fields, "people": "many", "version": str(int(version) + 1)},
    )
    assert bad.status_code == 422
    assert _error(bad.data, "people") == "Not a valid integer."
    # Removed only with the box ticked; then it is gone from the list.
    unticked = leader.post(f"/community/households/{new_id}/remove", data={"csrf_token": token})
    assert unticked.status_code == 422
    assert _error(unticked.data, "confirm")
    gone = leader.post(
        f"/community/households/{new_id}/remove", data={"csrf_token": token, "confirm": "1"}
    )
    assert gone.status_code == 302
    assert "3-502" not in _text(leader.get("/community/households")).split("removed")[-1]

    # Rounds: listed to the committee and leaders; only the committee opens one.
    page = committee.get("/community/rounds")
    token = _token(page)
    assert f'data-round="{made["id"]}" data-status="open"'.encode() in page.data
    wrong = committee.post(
        "/community/rounds",
        data={"csrf_token": token, "title": "", "limits.rice": "lots"},
    )
    assert wrong.status_code == 422
    assert _error(wrong.data, "title")
    assert _error(wrong.data, "limits.rice") == "Not a valid integer."
    assert "Rice:" in _summary(wrong.data)
    opened = committee.post(
        "/community/rounds",
        data={"csrf_token": token, "title": "Week 8", "limits.rice": "4", "limits.eggs": "20"},
    )
    assert opened.status_code == 302
    listed = _text(committee.get(opened.location))
    assert "Week 8 is open for orders." in listed
    assert "at most Rice 4 kg, Eggs 20 " in listed  # in the catalogue's order
    theirs = leader.get("/community/rounds")
    assert b'name="title"' not in theirs.data
    refused = leader.post("/community/rounds", data={"csrf_token": _token(theirs)})
    assert refused.status_code == 403
    assert _signed_in(stack, place.volunteer).get("/community/rounds").status_code == 403
    # The volunteer manages nothing.
    volunteer = _signed_in(stack, place.volunteer)
    for url in ("/community/buildings", "/community/people", "/community/stock"):
        assert volunteer.get(url).status_code == 403

    # Every page of the committee's in Chinese.
    committee.set_cookie("aidlink_lang", "zh")
    headings = {
        "/community": "居委会",
        "/community/buildings": "添加楼栋",
        "/community/people": "任命成员",
        "/community/households": "登记住户",
        f"/community/households/{place.households[first][0]}": "独居老人",
        "/community/rounds": "开启订购轮次",
        "/community/stock": "收到的每一份物资的去向",
        "/community/cases/new": "受理个案",
        "/community/cases/summary": "个案统计",
        "/community/hours": "社工工作时间",
    }
    for url, heading in headings.items():
        shown = committee.get(url)
        assert shown.status_code == 200, url
        assert heading in _text(shown), url


def test_the_committee_splits_the_stock_and_writes_off_and_cases_are_handed_on(
    stack: Stack,
) -> None:
    client, place, made = _place(stack)
    first, _second = place.buildings
    committee = _signed_in(stack, place.committee)
    post(client, f"{place.base}/rounds/{made['id']}/confirm", {}, place.committee, status=200)

    # Nothing received yet; then goods arrive.
    assert "Nothing has been received yet" in _text(committee.get("/community/stock"))
    receive(stack, place, {"vegetables": 20_000, "rice": 30_000})
    page = committee.get("/community/stock")
    token = _token(page)
    text = _text(page)
    assert "40 jin (20 kg)" in text  # vegetables received, as ordered and weighed
    assert 'value="vulnerable_first" checked' in text

    # By hand with more than there is: refused at its field; then vulnerable first.
    household = place.households[first][0]
    wrong = committee.post(
        "/community/stock/split",
        data={"csrf_token": token, "rule": "by_hand", f"allocations.{household}.rice": "99"},
    )
    assert wrong.status_code == 422
    assert _error(wrong.data, "allocations")
    assert "By hand:" in _summary(wrong.data)
    split = committee.post(
        "/community/stock/split", data={"csrf_token": token, "rule": "vulnerable_first"}
    )
    assert split.status_code == 302
    assert "household(s) to visit (Vulnerable households first)" in _text(
        committee.get(split.location)
    )
    volunteer = _signed_in(stack, place.volunteer)
    doors = _text(volunteer.get(f"/community/deliveries?building={first}"))
    assert 'data-household="1-101"' in doors  # the elderly resident living alone is served

    # Accounts: out for delivery now; a write-off over the stock is named at its field.
    page = committee.get("/community/stock")
    token = _token(page)
    assert re.search(
        r'data-account="pending">.*?data-item="vegetables">40 jin \(20 kg\)<', _text(page), re.S
    )
    over = committee.post(
        "/community/stock/write-off",
        data={"csrf_token": token, "item": "rice", "quantity": "500", "reason": "Wet sacks"},
    )
    assert over.status_code == 422
    assert "is in stock" in _error(over.data, "quantity")
    short = committee.post(
        "/community/stock/write-off",
        data={"csrf_token": token, "item": "vegetables", "quantity": "1", "reason": ""},
    )
    assert short.status_code == 422
    assert _error(short.data, "reason")
    committee.set_cookie("aidlink_lang", "zh")
    short = committee.post(
        "/community/stock/write-off",
        data={"csrf_token": token, "item": "vegetables", "quantity": "1", "reason": ""},
    )
    assert "原因" in _summary(short.data)
    committee.set_cookie("aidlink_lang", "en")
    assert "At most 8 kg is in stock." in _error(over.data, "quantity")
    done = committee.post(
        "/community/stock/write-off",
        data={"csrf_token": token, "item": "rice", "quantity": "1", "reason": "Wet sack"},
    )
    assert done.status_code == 302
    shown = _text(committee.get(done.location))
    assert "Written off: 1 kg of Rice." in shown
    assert re.search(r'data-account="written_off">.*?data-item="rice">1 kg<', shown, re.S)
    # By hand: two of the seven kg of rice left to the first household.
    by_hand = committee.post(
        "/community/stock/split",
        data={
            "csrf_token": token,
            "rule": "by_hand",
            "items": "rice",
            f"allocations.{household}.rice": "2",
        },
    )
    assert by_hand.status_code == 302
    assert "Delivery lists: 1 household(s) to visit (By hand)." in _text(
        committee.get(by_hand.location)
    )
    shown = _text(committee.get("/community/stock"))
    assert re.search(r'data-account="in_stock">.*?data-item="rice">5 kg<', shown, re.S)
    leader = _signed_in(stack, place.leaders[0])
    assert leader.get("/community/stock").status_code == 403
    refused = leader.post(
        "/community/stock/split", data={"csrf_token": _token(leader.get("/community"))}
    )
    assert refused.status_code == 403

    # Cases: a building leader takes a request in for a household of their building.
    page = leader.get("/community/cases/new")
    token = _token(page)
    assert f'<option value="{place.households[first][0]}"'.encode() in page.data
    wrong = leader.post("/community/cases/new", data={"csrf_token": token, "urgency": "soon"})
    assert wrong.status_code == 422
    assert _error(wrong.data, "kind") and _error(wrong.data, "summary")
    summary = _summary(wrong.data)
    assert "What the resident asks for:" in summary and "What the resident needs:" in summary
    taken = leader.post(
        "/community/cases/new",
        data={
            "csrf_token": token,
            "kind": "clinic_access",
            "urgency": "urgent",
            "summary": "Needs a ride to dialysis on Thursday",
            "household_id": place.households[first][3],
        },
    )
    assert taken.status_code == 302
    assert "is taken in." in _text(leader.get(taken.location))
    assert _signed_in(stack, place.volunteer).get("/community/cases/new").status_code == 403

    # The committee: counts only, and the cases it took in, which it assigns.
    page = committee.get("/community/cases/summary")
    assert page.status_code == 200
    assert 'data-kind="clinic_access"' in _text(page)
    assert re.search(r'data-kind="clinic_access">.*?data-urgency="urgent">1<', _text(page), re.S)
    assert "Needs a ride" not in _text(page)
    for narrow in (place.volunteer, place.leaders[0], place.social_worker):
        assert _signed_in(stack, narrow).get("/community/cases/summary").status_code == 403
    case = post(
        client,
        f"{place.base}/cases",
        {"kind": "counselling", "urgency": "soon", "summary": "Grief after a death"},
        place.committee,
    )
    page = committee.get("/community/cases")
    token = _token(page)
    assert f'data-case="{case["number"]}"'.encode() in page.data
    assert b"Needs a ride" not in page.data  # the leader's case is not the committee's
    # No room for an urgent case at 0 hours; then the social worker by name.
    worker = place.social_worker
    zero = committee.post(
        "/community/hours",
        data={"csrf_token": token, "user_id": worker.user_id, "hours_per_day": "0"},
    )
    assert zero.status_code == 302
    auto = committee.post(
        f"/community/cases/{case['id']}/assign",
        data={"csrf_token": token, "social_worker_id": "auto"},
    )
    assert auto.status_code == 409
    assert "No social worker has 1 hours a day to spare" in _error(
        auto.data, f"cases.{case['id']}.social_worker_id"
    )
    bad_hours = committee.post(
        "/community/hours",
        data={"csrf_token": token, "user_id": worker.user_id, "hours_per_day": "30"},
    )
    assert bad_hours.status_code == 422
    assert _error(bad_hours.data, f"workers.{worker.user_id}.hours_per_day")

    # The social worker sets their own hours; then the case goes to whoever has room.
    social = _signed_in(stack, worker)
    page = social.get("/community/hours")
    assert page.data.count(b'class="worker"') == 1
    set_hours = social.post(
        "/community/hours",
        data={"csrf_token": _token(page), "user_id": worker.user_id, "hours_per_day": "4"},
    )
    assert set_hours.status_code == 302
    assert "4 hours a day are noted." in _text(social.get(set_hours.location))
    assigned = committee.post(
        f"/community/cases/{case['id']}/assign",
        data={"csrf_token": token, "social_worker_id": "auto"},
    )
    assert assigned.status_code == 302
    assert "is assigned." in _text(committee.get(assigned.location))
    assert _signed_in(stack, place.volunteer).get("/community/hours").status_code == 403

    # The social worker closes it; a case supervisor reopens it, saying why.
    token = _token(social.get("/community/cases"))
    closed = social.post(
        f"/community/cases/{case['id']}/close",
        data={"csrf_token": token, "closing_note": "Referred to the hotline"},
    )
    assert closed.status_code == 302
    supervisor = member(stack, client, place.committee, "Supervisor")
    post(
        client,
        f"{place.base}/appointments",
        {"user_id": supervisor.user_id, "role": "case_supervisor"},
        place.committee,
    )
    boss = _signed_in(stack, supervisor, "zh")
    page = boss.get("/community/cases")
    token = _token(page)
    assert b"reopen-form" in page.data
    wrong = boss.post(f"/community/cases/{case['id']}/reopen", data={"csrf_token": token})
    assert wrong.status_code == 422
    assert _error(wrong.data, f"cases.{case['id']}.reason")
    again = boss.post(
        f"/community/cases/{case['id']}/reopen",
        data={"csrf_token": token, "reason": "She called again"},
    )
    assert again.status_code == 302
    after = _text(boss.get("/community/cases"))
    assert f'data-case="{case["number"]}" data-status="assigned"' in after
    assert boss.get("/community/cases/summary").status_code == 200
    # The social worker cannot reopen or assign.
    refused = social.post(
        f"/community/cases/{case['id']}/assign",
        data={"csrf_token": _token(social.get("/community")), "social_worker_id": "auto"},
    )
    assert refused.status_code in (403, 404)
