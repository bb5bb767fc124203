"""Spotting an organisation registered twice, without any I/O."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.duplicates.domain import (
    DuplicateCandidate,
    OrgRecord,
    find_duplicates,
    normalise_name,
    similarity,
)

WUHAN_JIANGAN = "420102"
WUHAN_WUCHANG = "420106"
WUHAN = "4201"
YICHANG = "4205"
HUBEI = "42"
CHANGSHA_FURONG = "430102"


def _full_width(text: str) -> str:
    """ASCII letters, digits and punctuation as their full-width forms, spaces as U+3000."""
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text
    )


def _org(org_id: str, name: str, region: str = WUHAN_JIANGAN, kind: str = "hospital") -> OrgRecord:
    return OrgRecord(id=org_id, name=name, region=region, kind=kind)


def _flagged(new: OrgRecord, *existing: OrgRecord, threshold: float = 0.85) -> list[str]:
    return [c.org_id for c in find_duplicates(new, existing, threshold=threshold)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("武汉市第一医院", "武汉市\u3000第一医院。"),
        ("武汉市第一医院", "【武汉市第一医院】"),
        ("武汉市第一医院", "武汉市 第一医院" + _full_width("(有限公司)")),
        ("Wuhan Union Hospital", _full_width("WUHAN UNION ") + "hospital"),
        ("Wuhan Union Hospital", "Wuhan Union Hospital Co., Ltd."),
    ],
)
def test_full_width_and_suffix_variants_of_one_hospital_are_flagged(
    first: str, second: str
) -> None:
    registered = _org("a", first)
    again = _org("b", second)

    assert first != second
    assert find_duplicates(again, [registered]) == [
        DuplicateCandidate(
            org_id="a",
            name=first,
            region=WUHAN_JIANGAN,
            score=1.0,
            reason="same normalised name and region",
        )
    ]


def test_charity_registered_again_with_a_company_suffix_is_flagged() -> None:
    federation = _org("charity", "湖北省慈善总会", region=HUBEI, kind="charity")
    again = _org(
        "again", "湖北省慈善总会" + _full_width("(有限公司)"), region=HUBEI, kind="charity"
    )

    assert normalise_name(federation.name) == normalise_name(again.name)
    assert _flagged(again, federation) == ["charity"]


def test_residents_committee_under_its_short_name_is_flagged() -> None:
    committee = _org("long", "百步亭社区居民委员会", kind="community")
    short = _org("short", "百步亭社区居委会", kind="community")

    [candidate] = find_duplicates(short, [committee])
    assert candidate.org_id == "long"
    assert candidate.score == 1.0


def test_same_name_in_two_districts_of_one_city_is_flagged_as_same_city() -> None:
    jiangan = _org("jiangan", "武汉市第一医院", region=WUHAN_JIANGAN)
    wuchang = _org("wuchang", "武汉市第一医院", region=WUHAN_WUCHANG)

    [candidate] = find_duplicates(wuchang, [jiangan])
    assert candidate.reason == "same normalised name in the same city"


def test_province_level_registration_matches_an_org_anywhere_in_the_province() -> None:
    district = _org("district", "湖北省慈善总会", region=WUHAN_JIANGAN, kind="charity")
    province = _org("province", "湖北省慈善总会", region=HUBEI, kind="charity")

    [candidate] = find_duplicates(province, [district])
    assert candidate.org_id == "district"
    assert candidate.reason == "same normalised name in the same province"


def test_same_name_in_another_province_is_not_flagged() -> None:
    wuhan = _org("wuhan", "市第一人民医院", region=WUHAN_JIANGAN)
    changsha = _org("changsha", "市第一人民医院", region=CHANGSHA_FURONG)

    assert _flagged(changsha, wuhan) == []
    assert _flagged(wuhan, changsha) == []


def test_same_name_in_another_city_of_the_same_province_is_not_flagged() -> None:
    wuhan = _org("wuhan", "市中心医院", region=WUHAN)
    yichang = _org("yichang", "市中心医院", region=YICHANG)

    assert _flagged(yichang, wuhan) == []


def test_different_hospitals_in_the_same_city_are_not_flagged() -> None:
    jinyintan = _org("jinyintan", "武汉市金银潭医院")
    pulmonary = _org("pulmonary", "武汉市肺科医院")
    first = _org("first", "武汉市第一医院")
    second = _org("second", "武汉市第二医院")

    assert _flagged(pulmonary, jinyintan) == []
    assert _flagged(second, first) == []


def test_a_misspelt_name_in_the_same_city_is_flagged_with_its_score() -> None:
    registered = _org("a", "Wuhan Jinyintan Hospital", region=WUHAN_JIANGAN)
    misspelt = _org("b", "Wuhan Jinyintang Hospital", region=WUHAN_WUCHANG)

    [candidate] = find_duplicates(misspelt, [registered])
    assert 0.85 <= candidate.score < 1.0
    assert candidate.reason == "similar name (0.96) in the same city"


def test_threshold_decides_how_similar_is_similar_enough() -> None:
    first = _org("first", "武汉市第一医院")
    second = _org("second", "武汉市第二医院")

    assert similarity(first.name, second.name) == pytest.approx(0.8)
    assert _flagged(second, first) == []
    assert _flagged(second, first, threshold=0.8) == ["first"]
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(second, [first], threshold=1.5)


def test_an_org_never_matches_itself() -> None:
    hospital = _org("same", "武汉市金银潭医院")
    twin = _org("twin", "武汉市金银潭医院")

    assert _flagged(hospital, hospital) == []
    assert _flagged(hospital, hospital, twin) == ["twin"]


def test_candidates_come_best_first_then_by_id_whatever_the_input_order() -> None:
    new = _org("new", "Wuhan Jinyintan Hospital")
    existing = [
        _org("c-exact", "WUHAN JINYINTAN HOSPITAL"),
        _org("a-exact", "Wuhan Jinyintan Hospital Co., Ltd."),
        _org("b-misspelt", "Wuhan Jinyintang Hospital"),
        _org("z-elsewhere", "Wuhan Jinyintan Hospital", region=CHANGSHA_FURONG),
        _org("d-other", "Wuhan Pulmonary Hospital"),
    ]
    expected = ["a-exact", "c-exact", "b-misspelt"]

    rng = random.Random(2020)
    for _ in range(10):
        rng.shuffle(existing)
        assert _flagged(new, *existing) == expected


def test_blank_names_match_nothing() -> None:
    blank = _org("blank", "   ")
    other_blank = _org("other", "\u3000")

    assert normalise_name(blank.name) == ""
    assert _flagged(blank, other_blank) == []
    assert similarity("", "") == 0.0


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        (_full_width("Wuhan"), "wuhan"),
        (_full_width("("), "("),
        ("武汉市第一人民医院", "武汉市第一人民"),
        ("武汉客厅方舱医院", "武汉客厅"),
        ("江岸区卫生院", "江岸区"),
        ("湖北省红十字基金会", "湖北省红十字"),
        ("九州通医药集团股份有限公司", "九州通医药"),
        ("Baibuting Residents' Committee", "baibuting"),
        ("Costco", "costco"),
        ("Zinc Works Inc", "zincworks"),
        ("医院", "医院"),
        ("Hospital Ltd", "hospitalltd"),
    ],
)
def test_names_normalise_as_a_reviewer_would_expect(name: str, normalised: str) -> None:
    assert normalise_name(name) == normalised


def test_similarity_is_symmetric_and_bounded() -> None:
    pairs = [
        ("武汉市金银潭医院", "武汉市肺科医院"),
        ("Wuhan Union Hospital", "Union Hospital of Wuhan"),
        ("tide", "diet"),  # difflib alone scores these 0.25 one way, 0.5 the other
    ]
    for a, b in pairs:
        score = similarity(a, b)
        assert 0.0 <= score < 1.0
        assert similarity(b, a) == score
    assert similarity("武汉市第一医院", "【武汉市第一医院】") == 1.0


_NAME_CHARACTERS = st.characters(
    categories=("L", "N", "M", "P", "S", "Zs"),
)
_MEANINGFUL = st.characters(categories=("L", "N")) | st.sampled_from("武汉医院社区〇")


@settings(database=None, max_examples=300)
@given(
    before=st.text(_NAME_CHARACTERS, max_size=20),
    core=_MEANINGFUL,
    after=st.text(_NAME_CHARACTERS, max_size=20)
    | st.sampled_from(["医院", " Co., Ltd.", "社区居委会", " hospital", _full_width("(有限公司)")]),
)
def test_normalising_is_idempotent_and_never_empties_a_real_name(
    before: str, core: str, after: str
) -> None:
    name = before + core + after

    once = normalise_name(name)

    assert once != ""
    assert normalise_name(once) == once
