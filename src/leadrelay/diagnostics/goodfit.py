"""Meta's "good fit" checks for Conversion Leads, side by side with the user's own figures.

Each check says pass, fail, not enough data yet (or not applicable), and why, in words a user can
act on. The numbers are Meta's (reference 2.4 and 2.5); how each is measured from what leadrelay
sees is documented on each function, because leadrelay does not see everything Meta sees (in
particular the leads generated in Lead Ads that never reach the CRM).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial

from leadrelay.diagnostics.funnel import FunnelFigures
from leadrelay.diagnostics.records import DAY


class Status(StrEnum):
    """The verdict of one check."""

    PASS = "pass"
    FAIL = "fail"
    NOT_ENOUGH_DATA = "not enough data yet"
    NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True, slots=True)
class Check:
    """One good-fit check: what Meta asks, the user's figure, the verdict and why."""

    key: str
    title: str
    meta_asks: str
    yours: str
    status: Status
    why: str


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_volume(f: FunnelFigures) -> Check:
    """Leads per month: distinct leads with a first-stage event in the 30 days before ``as_of``,
    scaled up from the data span when it is shorter (and not judged under 7 days of data)."""
    c = f.criteria
    asks = f"at least {c.min_leads_month} leads a month"
    make = partial(Check, "volume", "Lead volume", asks)
    first = f.stages[0].name if f.stages else None
    span = min(f.span_days, float(c.month_days))
    if first is None or f.first_time is None:
        return make("no leads", Status.NOT_ENOUGH_DATA, "No stage event yet.")
    n = f.recent_first_stage_leads
    if f.stages[0].leads == 0:
        return make(
            "0",
            Status.FAIL,
            f"No lead reached the first stage {first!r}. Send the raw lead stage too: "
            "Meta counts leads by it.",
        )
    if span >= c.month_days:
        basis = f"in the {c.month_days} days to {_when(f.as_of)[:10]}"
        yours, estimate = f"{n}", float(n)
    else:
        estimate = n * c.month_days / max(span, 1.0)
        yours = f"~{estimate:.0f} (from {n} over {span:.1f} days)"
        basis = f"estimated from {n} leads over {span:.1f} days"
    if span < c.min_span_days:
        return make(
            yours,
            Status.NOT_ENOUGH_DATA,
            f"Only {span:.1f} days of data; Meta looks at about {c.min_span_days} days "
            f"or more ({basis}).",
        )
    ok = estimate >= c.min_leads_month
    why = (
        f"{estimate:.0f} leads reached {first!r} a month ({basis}); Meta needs {c.min_leads_month}."
    )
    if not ok:
        why += " Run more Lead Ads volume, or check that every new lead is sent."
    return make(yours, Status.PASS if ok else Status.FAIL, why)


def check_stages(f: FunnelFigures) -> Check:
    """Stages: how many stages have events; the first (raw lead) one must be among them."""
    c = f.criteria
    asks = f"at least {c.min_stages} stages incl. the raw lead ({c.recommended_stages}+ advised)"
    make = partial(Check, "stages", "Funnel stages", asks)
    used = [s.name for s in f.stages if s.events]
    yours = str(len(used))
    if not used:
        return make("0", Status.NOT_ENOUGH_DATA, "No stage event yet.")
    first = f.stages[0]
    names = ", ".join(repr(n) for n in used)
    if not first.events:
        return make(
            yours,
            Status.FAIL,
            f"The raw lead stage {first.name!r} has no events (seen: {names}). "
            "Map the event for a new lead as the first row of [mapping].",
        )
    if len(used) < c.min_stages:
        return make(
            yours,
            Status.FAIL,
            f"Only {names}. Send at least one later stage (e.g. qualified, converted) "
            "as it happens.",
        )
    why = f"{len(used)} stages: {names}."
    if len(used) < c.recommended_stages:
        why += f" Meta recommends {c.recommended_stages} or more."
    return make(yours, Status.PASS, why)


def check_rate(f: FunnelFigures) -> Check:
    """Target stage: of the leads first seen at least 28 days before ``as_of``, the share reaching
    each later stage within 28 days of their first event; passes when one stage is in 1-40%."""
    c = f.criteria
    low, high, days = c.rate_low, c.rate_high, c.window_days
    asks = f"a stage reached within {days} days by {_pct(low)}-{_pct(high)} of leads"
    later = [s for s in f.stages[1:] if s.rate_28d is not None]
    rates = ", ".join(f"{s.name!r} {_pct(s.rate_28d or 0.0)}" for s in later)
    make = partial(Check, "rate", f"Target stage within {days} days", asks)
    if len(f.stages) < 2:
        return make(
            "-",
            Status.NOT_ENOUGH_DATA,
            "Only one stage so far; a target stage needs a later one.",
        )
    if f.cohort < c.min_cohort:
        return make(
            rates or "-",
            Status.NOT_ENOUGH_DATA,
            f"{f.cohort} lead(s) were first seen at least {days} days ago; the rates "
            f"need {c.min_cohort} or more.",
        )
    good = [s for s in later if low <= (s.rate_28d or 0.0) <= high]
    if good:
        best = ", ".join(f"{s.name!r} ({s.reached_28d} of {f.cohort} leads)" for s in good)
        return make(
            rates,
            Status.PASS,
            f"{best} within {days} days: a good optimization target.",
        )
    return make(
        rates,
        Status.FAIL,
        f"Of {f.cohort} leads, no later stage is reached by {_pct(low)}-{_pct(high)} "
        f"within {days} days. Add an intermediate stage (e.g. qualified) or one that "
        "happens sooner.",
    )


def check_coverage(f: FunnelFigures, *, from_store: bool) -> Check:
    """Lead coverage: of the lead ids leadrelay saw, the share with an event Meta accepted
    (delivered; mapped, for files). Meta compares with every lead generated in Lead Ads."""
    c = f.criteria
    asks = f"at least {_pct(c.min_coverage)} of leads with matching events"
    make = partial(Check, "coverage", "Lead coverage", asks)
    caveat = (
        " Meta's own Lead Coverage compares with all leads generated in Lead Ads, which "
        "leadrelay does not see: check it in Events Manager."
    )
    if not f.seen_leads:
        return make(
            "-",
            Status.NOT_ENOUGH_DATA,
            "No lead id seen yet." + caveat,
        )
    share = f.accepted_leads / f.seen_leads
    what = "delivered" if from_store else "that would be accepted"
    yours = f"{_pct(share)} ({f.accepted_leads} of {f.seen_leads})"
    ok = share >= c.min_coverage
    why = f"{f.accepted_leads} of the {f.seen_leads} leads seen have an event {what}."
    if not ok:
        why += " See the error table for what stops the others."
    return make(yours, Status.PASS if ok else Status.FAIL, why + caveat)


def check_upload(f: FunnelFigures, *, from_store: bool) -> Check:
    """Upload cadence (store only): the largest gap between delivered events in the last month,
    up to now. Files describe the past: the check applies once leadrelay is live."""
    c = f.criteria
    make = partial(Check, "upload", "Upload frequency", "an upload at least daily")
    if not from_store:
        return make(
            "-",
            Status.NOT_APPLICABLE,
            "Not applicable before going live: run leadrelay continuously (serve) or "
            "schedule `send` at least daily.",
        )
    u = f.upload
    if u is None:
        return make(
            "-",
            Status.NOT_ENOUGH_DATA,
            f"Nothing delivered in the last {c.month_days} days.",
        )
    hours = u.max_gap_s / 3600
    yours = f"largest gap {hours:.1f} h"
    if u.max_gap_s > c.max_upload_gap_s:
        return make(
            yours,
            Status.FAIL,
            f"Nothing was delivered from {_when(u.gap_from)} to {_when(u.gap_to)} "
            f"({hours:.1f} h). Keep delivery running (a day without any stage change "
            "also shows as a gap).",
        )
    if f.as_of - u.first < c.min_upload_history_s:
        return make(
            yours,
            Status.NOT_ENOUGH_DATA,
            f"Deliveries only since {_when(u.first)}; judged after "
            f"{c.min_upload_history_s / DAY:.0f} days.",
        )
    return make(
        yours,
        Status.PASS,
        f"Something was delivered at least every {hours:.1f} h since {_when(u.first)}.",
    )


def check_lead_ids(f: FunnelFigures) -> Check:
    """Lead ids: the share of (not filtered) events rejected for a missing or invalid lead id,
    by us or by Meta (100/2804036); under 1% passes."""
    c = f.criteria
    asks = f"valid 15-17 digit Meta lead ids (under {_pct(c.max_lead_id_problems)} rejected)"
    make = partial(Check, "lead_ids", "Lead ids", asks)
    if not f.considered:
        return make("-", Status.NOT_ENOUGH_DATA, "No event yet.")
    bad = sum(f.lead_id_problems.values())
    share = bad / f.considered
    yours = f"{_pct(share)} rejected ({bad} of {f.considered})"
    if not bad:
        return make(yours, Status.PASS, "Every event carries a valid lead id.")
    labels = {
        "missing_lead_id": "missing",
        "invalid_lead_id": "invalid (not 15-17 digits, or digits lost)",
        "meta_100_2804036": "unknown to Meta (100/2804036)",
    }
    parts = ", ".join(f"{n} {labels.get(r, r)}" for r, n in sorted(f.lead_id_problems.items()))
    ok = share < c.max_lead_id_problems
    why = f"{parts}. The lead id must be Meta's Lead ID from Lead Ads, not a CRM id."
    return make(yours, Status.PASS if ok else Status.FAIL, why)


def good_fit(f: FunnelFigures, *, from_store: bool) -> tuple[Check, ...]:
    """Every check, in the order Meta lists them."""
    return (
        check_volume(f),
        check_stages(f),
        check_rate(f),
        check_coverage(f, from_store=from_store),
        check_upload(f, from_store=from_store),
        check_lead_ids(f),
    )
