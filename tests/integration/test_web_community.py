"""The community's pages through Flask's test client, over the real community service
(real workers): each page shows its reader what their role gives them and refuses the
rest; the order sheet's errors name the household and the item, in the page's
language; the committee's confirmation becomes the round's figures; a volunteer marks
deliveries at the door."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.support.auth import PASSWORD, Account, admin, register
from tests.support.community import (
    Community,
    add_households,
    community,
    order_round,
    post,
)
from tests.support.community_stock import receive
from tests.support.stack import Stack

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


def _signed_in(stack: Stack, who: Account, language: str = "en") -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    page = client.get("/signin")
    token = CSRF.search(page.data).group(1).decode()  # type: ignore[union-attr]
    done = client.post(
        "/signin", data={"csrf_token": token, "email": who.email, "password": PASSWORD}
    )
    assert done.status_code == 302
    return client


def _token(page: Any) -> str:
    assert page.status_code == 200, page.data[:800]
    found = CSRF.search(page.data)
    assert found
    return found.group(1).decode()


def _error(page: bytes, name: str) -> str:
    found = re.search(rb'id="f-' + name.replace(".", "-").encode() + rb'-error">([^<]*)<', page)
    return html.unescape(found.group(1).decode()) if found else ""


def _summary(page: bytes) -> str:
    found = re.search(rb'<div class="error-summary".*?</div>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(0).decode())) if found else ""


def _place(stack: Stack) -> tuple[Any, Community, dict[str, Any]]:
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    place = community(stack, client, boss)
    add_households(client, place)
    made = order_round(client, place)
    return client, place, made


def _sheet(client: Any, place: Community, round_id: str, building: str) -> list[dict[str, Any]]:
    answer = client.get(
        f"{place.base}/rounds/{round_id}/orders?building_id={building}",
        headers=place.committee.headers,
    )
    assert answer.status_code == 200, answer.json
    return list(answer.json["items"])


def test_a_building_leader_enters_their_buildings_orders_by_keyboard_and_paste(
    stack: Stack,
) -> None:
    client, place, made = _place(stack)
    first, second = place.buildings
    round_id = made["id"]
    orders_1 = f"/community/rounds/{round_id}/orders/{first}"
    orders_2 = f"/community/rounds/{round_id}/orders/{second}"

    # The leader of building 1 is offered their building's sheet, not building 2's.
    leader = _signed_in(stack, place.leaders[0])
    assert b'href="/community"' in leader.get("/").data
    home = leader.get("/community")
    assert home.status_code == 200
    assert f'data-orders="{first}"'.encode() in home.data
    assert f'data-orders="{second}"'.encode() not in home.data
    assert leader.get(orders_2).status_code == 403

    # One row a household of building 1 only, as ordered so far, with the limits.
    page = leader.get(orders_1)
    token = _token(page)
    rows = re.findall(rb'<tr data-household="([^"]+)"', page.data)
    assert rows == [b"1-101", b"1-102", b"1-201", b"2-101", b"2-202", b"2-301"]
    assert b'name="rows.0.items.vegetables" value="4"' in page.data
    assert b'data-limit="vegetables">at most 10<' in page.data
    assert b"Call before knocking" not in page.data  # the sheet is no place for notes

    # Not a number, then over a limit: nothing saved, each error at its cell, naming
    # the household and the item.
    wrong = leader.post(orders_1, data={"csrf_token": token, "rows.1.items.rice": "two"})
    assert wrong.status_code == 422
    assert _error(wrong.data, "rows.1.items.rice") == "Not a valid integer."
    assert "1-102 · Rice: Not a valid integer." in _summary(wrong.data)
    assert b'name="rows.1.items.rice" value="two"' in wrong.data  # kept, to be corrected
    over = {"csrf_token": token, "rows.0.items.vegetables": "12", "rows.2.items.eggs": "31"}
    wrong = leader.post(orders_1, data=over)
    assert wrong.status_code == 422
    assert _error(wrong.data, "rows.0.items.vegetables") == (
        "12 is more than the 10 a household may order."
    )
    summary = _summary(wrong.data)
    assert "Some rows cannot be taken; nothing was saved." in summary
    assert "1-101 · Vegetables: 12 is more than the 10 a household may order." in summary
    assert "1-201 · Eggs: 31 is more than the 30 a household may order." in summary
    assert _sheet(client, place, round_id, first)[0]["items"]["vegetables"] == 4
    # The same in Chinese.
    leader.set_cookie("aidlink_lang", "zh")
    wrong = leader.post(orders_1, data=over)
    assert _error(wrong.data, "rows.0.items.vegetables") == "12 超过了每户限购的 10。"
    assert "1-101 · 蔬菜" in _summary(wrong.data)
    leader.set_cookie("aidlink_lang", "en")

    # The form without its CSRF token is refused; with it, the sheet is saved as typed
    # (an empty row clears that household's order).
    assert leader.post(orders_1, data={"rows.0.items.eggs": "5"}).status_code == 400
    saved = leader.post(
        orders_1,
        data={
            "csrf_token": token,
            "rows.0.items.vegetables": "5",
            "rows.0.items.metformin_500mg": "1",
            "rows.2.items.rice": "3",
        },
    )
    assert saved.status_code == 302
    assert "Orders saved for 6 household(s)." in html.unescape(
        leader.get(saved.location).get_data(True)
    )
    sheet = _sheet(client, place, round_id, first)
    assert sheet[0]["items"] == {"vegetables": 5, "metformin_500mg": 1}
    assert sheet[1]["items"] == {}
    assert sheet[2]["items"] == {"rice": 3}

    # Pasted rows: a household the building does not have is named by its row.
    bad = "户\t蔬菜\t大米\n1-101\t2\t1\n9-909\t1\t\n"
    pasted = leader.post(orders_1, data={"csrf_token": token, "text": bad})
    assert pasted.status_code == 422
    assert "Row 3: No household 9-909 in this building." in _error(pasted.data, "text")
    assert "9-909" in pasted.get_data(True)  # the pasted table comes back to be corrected
    pasted = leader.post(
        orders_1, data={"csrf_token": token, "text": "Household,Eggs,Rice\n1-102,12,2\n"}
    )
    assert pasted.status_code == 302
    assert _sheet(client, place, round_id, first)[1]["items"] == {"eggs": 12, "rice": 2}

    # The volunteer and the social worker have no sheet to fill.
    for narrow in (place.volunteer, place.social_worker):
        other = _signed_in(stack, narrow)
        assert other.get(orders_1).status_code == 403
        assert b"data-orders=" not in other.get("/community").data
    # Another organisation's member has no community here.
    hospital = _signed_in(stack, register(client, kind="hospital"))
    assert b'href="/community"' not in hospital.get("/").data
    assert hospital.get("/community").status_code == 403
    assert hospital.get(orders_1).status_code == 403


def test_the_committee_confirms_the_totals_and_a_volunteer_carries_the_deliveries(
    stack: Stack,
) -> None:
    client, place, made = _place(stack)
    first, second = place.buildings
    totals_url = f"/community/rounds/{made['id']}/totals"

    # The committee sees each building's totals and the community's.
    committee = _signed_in(stack, place.committee)
    home = committee.get("/community").data
    for building in (first, second):
        assert f'data-orders="{building}"'.encode() in home
        assert f'data-deliveries="{building}"'.encode() in home
    assert f'data-totals="{made["id"]}"'.encode() in home
    page = committee.get(totals_url)
    token = _token(page)
    assert f'data-building="{first}"'.encode() in page.data
    assert f'data-building="{second}"'.encode() in page.data
    assert b'name="quantities.vegetables" value="48"' in page.data
    # A building leader sees their building's figures, with nothing to confirm; a
    # volunteer has no totals page.
    leader = _signed_in(stack, place.leaders[0])
    theirs = leader.get(totals_url)
    assert theirs.status_code == 200
    assert f'data-building="{second}"'.encode() not in theirs.data
    assert b'name="quantities.vegetables"' not in theirs.data
    refused = _signed_in(stack, place.volunteer).get(totals_url)
    assert refused.status_code == 403
    assert "for the committee and the building leaders" in html.unescape(refused.get_data(True))

    # A figure that is not a number is named; then the committee asks for more rice.
    wrong = committee.post(totals_url, data={"csrf_token": token, "quantities.vegetables": "lots"})
    assert wrong.status_code == 422
    assert _error(wrong.data, "quantities.vegetables") == "Not a valid integer."
    assert "Vegetables: Not a valid integer." in _summary(wrong.data)
    figures = {"vegetables": "48", "rice": "40", "eggs": "110"}
    done = committee.post(
        totals_url,
        data={"csrf_token": token, **{f"quantities.{k}": v for k, v in figures.items()}},
    )
    assert done.status_code == 302
    shown = html.unescape(committee.get(totals_url).get_data(True))
    assert "2 item(s) go to matching as the community's need." in shown
    assert 'data-round-status="confirmed"' in shown
    [confirmed] = client.get(f"{place.base}/rounds", headers=place.committee.headers).json["items"]
    assert confirmed["requested"] == {"vegetables": 48, "rice": 40, "eggs": 110}

    # What arrived is split as ordered; building 1's volunteer carries its list.
    receive(stack, place, {"vegetables": 24_000, "rice": 40_000})
    post(client, f"{place.base}/distributions", {"rule": "as_ordered"}, place.committee)
    volunteer = _signed_in(stack, place.volunteer)
    home = volunteer.get("/community")
    assert f'data-deliveries="{first}"'.encode() in home.data
    assert f'data-deliveries="{second}"'.encode() not in home.data
    page = volunteer.get(f"/community/deliveries?building={first}")
    token = _token(page)
    text = html.unescape(page.get_data(True))
    doors = re.findall(r'data-delivery="([^"]+)" data-household="([^"]+)"', text)
    assert [door for _id, door in doors] == ["1-101", "1-102", "1-201", "2-202", "2-301"]
    assert "Call before knocking; deaf" in text
    assert "4 jin (2 kg)" in text  # the first household's vegetables, as ordered and weighed
    assert f'data-building="{second}"' not in text
    assert volunteer.get(f"/community/deliveries?building={second}").status_code == 403
    assert volunteer.get(f"/community/rounds/{made['id']}/orders/{first}").status_code == 403

    # At the door: one delivered, one not at home (with a note); a second outcome for
    # the same door is refused and said so.
    (first_id, _), (second_id, _) = doors[:2]
    url = "/community/deliveries/{}/outcome"
    for delivery_id, status, note in ((first_id, "delivered", ""), (second_id, "not_home", "Away")):
        marked = volunteer.post(
            url.format(delivery_id),
            data={"csrf_token": token, "status": status, "note": note, "building": first},
        )
        assert marked.status_code == 302
        assert marked.location.endswith(f"/community/deliveries?building={first}")
    after = html.unescape(volunteer.get(f"/community/deliveries?building={first}").get_data(True))
    assert "1-102: not home." in after
    assert f'data-delivery="{first_id}" data-household="1-101" data-status="delivered"' in after
    assert f'data-delivery="{second_id}" data-household="1-102" data-status="not_home"' in after
    again = volunteer.post(
        url.format(first_id), data={"csrf_token": token, "status": "refused", "building": first}
    )
    assert "This delivery is already marked delivered." in html.unescape(
        volunteer.get(again.location).get_data(True)
    )
    states = {
        d["id"]: (d["status"], d["outcome_note"])
        for d in client.get(f"{place.base}/deliveries", headers=place.committee.headers).json[
            "items"
        ]
    }
    assert states[first_id] == ("delivered", None)
    assert states[second_id] == ("not_home", "Away")
    # The other building's leader cannot mark building 1's deliveries.
    other = _signed_in(stack, place.leaders[1])
    token = _token(other.get("/community"))
    refused = other.post(url.format(doors[2][0]), data={"csrf_token": token, "status": "delivered"})
    assert refused.status_code == 404

    # The social worker's cases: a resident's request the committee took in and handed
    # to them, the most urgent first; a follow-up without a note is refused at its field.
    case = post(
        client,
        f"{place.base}/cases",
        {"kind": "medicine_pickup", "urgency": "urgent", "summary": "Insulin from the clinic"},
        place.committee,
    )
    post(
        client,
        f"{place.base}/cases/{case['id']}/assign",
        {"social_worker_id": place.social_worker.user_id},
        place.committee,
        status=200,
    )
    worker = _signed_in(stack, place.social_worker, "zh")
    assert b"data-cases" in worker.get("/community").data
    page = worker.get("/community/cases")
    token = _token(page)
    shown = html.unescape(page.get_data(True))
    assert f'data-case="{case["number"]}" data-status="assigned"' in shown
    assert "Insulin from the clinic" in shown and "代购药品" in shown
    note = f"cases.{case['id']}.note"
    empty = worker.post(f"/community/cases/{case['id']}/follow-up", data={"csrf_token": token})
    assert empty.status_code == 422
    assert _error(empty.data, note)
    done = worker.post(
        f"/community/cases/{case['id']}/follow-up",
        data={"csrf_token": token, "note": "Picked up two pens; delivered at 15:00"},
    )
    assert done.status_code == 302
    after = html.unescape(worker.get("/community/cases").get_data(True))
    assert f'data-case="{case["number"]}" data-status="in_progress"' in after
    # Nobody else's list: the volunteer and the building leaders have no case page.
    for narrow in (place.volunteer, place.leaders[0]):
        assert _signed_in(stack, narrow).get("/community/cases").status_code == 403
