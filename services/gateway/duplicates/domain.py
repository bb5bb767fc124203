"""Spotting organisations that are probably one organisation registered twice.

Pure functions only: no Flask, no database, no I/O. The gateway can call
:func:`find_duplicates` when an organisation registers, and a coordinator can
run it over the directory on demand; either way the answer is a list of
candidates for a person to review, never an automatic merge.

Two organisations are candidates when their regions match at city level and
their names, once normalised by :func:`normalise_name`, are equal or at least
``threshold`` similar by :func:`similarity`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher

__all__ = [
    "CHINESE_SUFFIXES",
    "ENGLISH_SUFFIXES",
    "DuplicateCandidate",
    "OrgRecord",
    "find_duplicates",
    "normalise_name",
    "similarity",
]

#: Chinese legal and organisational endings, longest first so that, for
#: example, 方舱医院 goes as a whole rather than leaving 方舱 behind, and
#: 社区居民委员会 goes before 委员会 could leave 社区居民 behind. Only 医院 is
#: listed for hospitals: 人民医院 loses 医院 but keeps 人民, because
#: 第一人民医院 and 第一医院 are often different hospitals in one city.
CHINESE_SUFFIXES: tuple[str, ...] = tuple(
    sorted(
        (
            "有限责任公司",
            "股份有限公司",
            "有限公司",
            "公司",
            "集团",
            "方舱医院",
            "医院",
            "卫生院",
            "社区居民委员会",
            "居民委员会",
            "居委会",
            "社区",
            "委员会",
            "基金会",
            "慈善总会",
            "慈善会",
        ),
        key=lambda suffix: (-len(suffix), suffix),
    )
)

#: English endings, as sequences of whole words, longest first. They are
#: matched word by word, never inside a word, so "Costco" keeps its "co" and
#: "Zinc Works" its "inc". "company" on its own is included as the long form
#: of "co".
ENGLISH_SUFFIXES: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            ("co", "ltd"),
            ("company", "limited"),
            ("company",),
            ("limited",),
            ("ltd",),
            ("inc",),
            ("llc",),
            ("corporation",),
            ("corp",),
            ("co",),
            ("foundation",),
            ("hospital",),
            ("community", "committee"),
            ("residents", "committee"),
            ("committee",),
        ),
        key=lambda words: (-len(words), words),
    )
)

# Scripts written without spaces between words: a space or a punctuation mark
# between two of these characters separates nothing, so it is dropped before
# splitting the name into words.
_CJK = (
    "\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
)
_GAP_BETWEEN_CJK = re.compile(f"(?<=[{_CJK}])\\s+(?=[{_CJK}])")
_WORD = re.compile(f"[{_CJK}]+|[^{_CJK}\\s]+")
_REGION_CODE = re.compile(r"[0-9]{2}(?:[0-9]{2}){0,2}")
_CITY_DIGITS = 4
_MAX_PASSES = 8


@dataclass(frozen=True)
class OrgRecord:
    """What duplicate detection needs to know about one registered organisation.

    ``region`` is a 2, 4 or 6 digit administrative division code (province,
    city, district); ``kind`` is carried along for the reviewer and does not
    affect matching, since an organisation registered twice may well have been
    given a different kind the second time.
    """

    id: str
    name: str
    region: str
    kind: str


@dataclass(frozen=True)
class DuplicateCandidate:
    """An existing organisation that may be the same as the one being checked.

    ``score`` is 1.0 for equal normalised names, otherwise the
    :func:`similarity` of the names; ``reason`` says in words why it was
    flagged, e.g. "similar name (0.91) in the same city".
    """

    org_id: str
    name: str
    region: str
    score: float
    reason: str


def normalise_name(name: str) -> str:
    """Reduce an organisation's name to the form used to compare it with others.

    In order:

    1. Unicode NFKC, which folds full-width letters, digits and punctuation to
       their ordinary forms (full-width "Wuhan", U+FF37 U+FF55 ..., becomes
       "Wuhan"; the full-width parenthesis U+FF08 becomes "("), then case
       folding ("Wuhan" becomes "wuhan").
    2. Everything that is not a letter, digit or combining mark, i.e. all
       punctuation, symbols and whitespace, ASCII or CJK (、。·【】《》“”-—_,
       full-width parentheses and spaces, curly single quotes ...), separates
       words and is then dropped.
    3. Legal and organisational endings are stripped from the end, repeatedly:
       the English ones in :data:`ENGLISH_SUFFIXES` as whole words, the
       Chinese ones in :data:`CHINESE_SUFFIXES` as characters, longest first.
       So "湖北省慈善总会(有限公司)" and "湖北省慈善总会" both become "湖北省",
       and "Wuhan Union Hospital Co., Ltd." becomes "wuhanunion".
    4. If stripping would leave nothing ("医院", "Hospital Ltd"), the name is
       kept unstripped ("医院", "hospitalltd") rather than returned empty.

    The steps are repeated until the result no longer changes, so normalising
    a normalised name returns it unchanged.

    The result is never empty, with one exception: a name with no visible
    character at all (empty or whitespace only) gives "". A name with visible
    characters but no letter or digit ("???") keeps those characters, so that
    it is not mistaken for every other such name.
    """
    current = name
    for _ in range(_MAX_PASSES):
        following = _normalise_once(current)
        if following == current:
            break
        current = following
    return current


def similarity(a: str, b: str) -> float:
    """How alike two organisation names are, from 0.0 (nothing shared) to 1.0.

    Both names go through :func:`normalise_name` first, so variants that
    normalise to the same form score 1.0. The score is
    :class:`difflib.SequenceMatcher`'s ratio, twice the number of matching
    characters over the total length, computed with the two names in a fixed
    order so that ``similarity(a, b) == similarity(b, a)``. A blank name is
    similar to nothing and scores 0.0.
    """
    return _ratio(normalise_name(a), normalise_name(b))


def find_duplicates(
    new: OrgRecord, existing: Iterable[OrgRecord], *, threshold: float = 0.85
) -> list[DuplicateCandidate]:
    """List the existing organisations that are probably ``new`` registered again.

    An existing organisation is flagged when its region matches ``new``'s at
    city level and either its normalised name equals ``new``'s (score 1.0) or
    the names' :func:`similarity` is at least ``threshold``.

    Regions match at city level when, cut to their first four digits (the
    city), the shorter code is a prefix of the longer: 420102 and 420106 match
    (two districts of Wuhan), 42 matches 420102 (a province-level registration
    may be anywhere in the province), 4201 and 4205 do not (Wuhan and
    Yichang), nor 42 and 43. A code that is not 2, 4 or 6 digits matches
    nothing.

    An organisation never matches itself (same ``id``), and a blank name
    matches nothing. The result is sorted by score, highest first, then by
    id, so the same input always gives the same list.

    Raises ``ValueError`` if ``threshold`` is not between 0 and 1.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold!r}")
    new_name = normalise_name(new.name)
    if not new_name:
        return []
    candidates: list[DuplicateCandidate] = []
    for org in existing:
        if org.id == new.id:
            continue
        place = _where(new.region, org.region)
        if place is None:
            continue
        org_name = normalise_name(org.name)
        if not org_name:
            continue
        if org_name == new_name:
            score = 1.0
            reason = (
                "same normalised name and region"
                if place == "region"
                else f"same normalised name in the same {place}"
            )
        else:
            score = _ratio(new_name, org_name, threshold=threshold)
            if score < threshold:
                continue
            reason = f"similar name ({_shown(score)}) in the same {place}"
        candidates.append(
            DuplicateCandidate(
                org_id=org.id, name=org.name, region=org.region, score=score, reason=reason
            )
        )
    candidates.sort(key=lambda candidate: (-candidate.score, candidate.org_id))
    return candidates


def _normalise_once(name: str) -> str:
    """One pass of :func:`normalise_name`'s steps."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    spaced = "".join(ch if unicodedata.category(ch)[0] in "LNM" else " " for ch in text)
    words = _WORD.findall(_GAP_BETWEEN_CJK.sub("", spaced))
    if not words:
        return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "ZC")
    return "".join(_strip_suffixes(words)) or "".join(words)


def _strip_suffixes(words: list[str]) -> list[str]:
    """Drop legal and organisational endings from a name split into words."""
    words = list(words)
    while words:
        for suffix_words in ENGLISH_SUFFIXES:
            if tuple(words[-len(suffix_words) :]) == suffix_words:
                del words[-len(suffix_words) :]
                break
        else:
            last = words[-1]
            for suffix in CHINESE_SUFFIXES:
                if last.endswith(suffix):
                    rest = last[: -len(suffix)]
                    if rest:
                        words[-1] = rest
                    else:
                        words.pop()
                    break
            else:
                break
    return words


def _ratio(a: str, b: str, *, threshold: float = 0.0) -> float:
    """SequenceMatcher's ratio of two normalised names, the same either way round.

    Returns 0.0 early when the cheap upper bounds already fall below
    ``threshold``, since the exact ratio could then only be lower.
    """
    if not a or not b:
        return 0.0
    first, second = sorted((a, b))
    matcher = SequenceMatcher(None, first, second, autojunk=False)
    if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
        return 0.0
    return matcher.ratio()


def _where(a: str, b: str) -> str | None:
    """How two region codes match at city level: "region", "city", "province" or None.

    "region" when the codes are equal, "city" when both name the same city,
    "province" when one of them only names the province the other lies in,
    and None when they do not match.
    """
    if not (_REGION_CODE.fullmatch(a) and _REGION_CODE.fullmatch(b)):
        return None
    shorter, longer = sorted((a[:_CITY_DIGITS], b[:_CITY_DIGITS]), key=len)
    if not longer.startswith(shorter):
        return None
    if a == b:
        return "region"
    return "city" if len(shorter) == _CITY_DIGITS else "province"


def _shown(score: float) -> str:
    """A score to two decimals, rounded down so that a near miss never shows as 1.00."""
    return f"{math.floor(score * 100 + 1e-9) / 100:.2f}"
