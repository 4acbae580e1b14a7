"""Phone numbers written nationally (``06 12 34 56 78`` in FR), read without ``phonenumbers.parse``
where a region's plan is simple: no international prefix, no leading calling code, the national
prefix stripped, the rest validated by phonenumbers' metadata. Split out of ``phone`` (house
rule: modules under ~300 lines), which takes ``national_digits`` first and the full parse for
anything it leaves.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from phonenumbers import PhoneMetadata

from leadrelay.meta.phone_valid import validator


@dataclass(frozen=True, slots=True)
class _NationalPlan:
    """What ``phonenumbers.parse`` does with a region's national numbers, where it is simple."""

    calling_code: str
    # Matches where parse() would read the digits as a national number: not after the region's
    # international (IDD) prefix nor its calling code; group "trunk" ends after the national
    # prefix as phonenumbers strips it (unset: no prefix).
    head: Callable[[str], re.Match[str] | None]
    lengths: frozenset[int]  # possible national significant number lengths
    local_only: frozenset[int]  # lengths phonenumbers will not strip the prefix down to
    valid: Callable[[str], bool]  # is_valid for the region's calling code


def _national_plan(region: str) -> _NationalPlan | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    # A transform rule (AR, BR, JP...) rewrites the number; those go through parse().
    if metadata is None or metadata.national_prefix_transform_rule:
        return None
    idd, trunk = metadata.international_prefix, metadata.national_prefix_for_parsing
    general, code = metadata.general_desc, metadata.country_code
    if general is None or code is None:
        return None
    # The empty group marks that the prefix matched (even matching nothing); the alternation
    # takes the prefix's first match, as trunk.match(digits) does, and nothing after it can
    # make the match backtrack into another.
    # No national prefix: "(?!)" never matches, so the group is never set.
    head = (
        f"(?!{code})" + (f"(?!(?:{idd}))" if idd else "") + f"(?:(?:{trunk or '(?!)'})(?P<trunk>)|)"
    )
    return _NationalPlan(
        str(code),
        re.compile(head, re.ASCII).match,  # digits are ASCII
        frozenset(general.possible_length),
        frozenset(general.possible_length_local_only),
        validator(code),
    )


# One plan per region code, at most 512 kept (the rule's own regions resolve to ~250 codes).
_PLANS: Final[dict[str, _NationalPlan | None]] = {}
_PLAIN_MARKS: Final = b" .-()/"  # with the digits, all a plain national number holds


def national_digits(text: str, region: str) -> str | None:
    """E.164 digits of a valid national number ("06 12 34 56 78", FR), else None.

    ``phonenumbers.parse`` spends most of its time finding the number in free text; for plain
    digits and separators it comes down to: no international prefix, no leading country code,
    strip the national prefix, keep the rest. When that is unambiguous the number is built here
    and only validated by phonenumbers' metadata; anything else (and any invalid number) returns
    None, so the caller takes the full parse and gives the same answer. ``text`` must start with
    neither "+" nor "00" (those are international).
    """
    try:
        plan = _PLANS[region]
    except KeyError:
        plan = _national_plan(region)
        if len(_PLANS) < 512:  # a resolver of our own gives ~250 codes; another may give more
            _PLANS[region] = plan
    if plan is None or not (text.isascii() and 2 <= len(text) <= 40):
        return None
    plain = text.encode("ascii").translate(None, _PLAIN_MARKS)
    if not plain.isdigit():  # not only digits and separators (nor no digits at all)
        return None
    digits = plain.decode("ascii")
    head = plan.head(digits)
    if head is None:
        return None
    national = digits
    if (cut := head.end("trunk")) >= 0:
        national = digits[cut:]
        if len(national) in plan.local_only:
            return None
    if len(national) not in plan.lengths or national[0] == "0":  # leading zeros: ask parse()
        return None
    return plan.calling_code + national if plan.valid(national) else None
