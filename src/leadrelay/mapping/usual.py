"""``Mapper.map_parts`` for the usual event: one pass, nothing checked twice, no detour.

Most configs are shaped alike (the lead_id read from a top-level key, event_time and the prebuilt
event_id from the context, no consent category, custom_data closed by event_source), and most
events are too: a name in [mapping], an event_id, a lead_id as 15-17 digits, a timestamp that
converts. For those ``usual_parts`` builds the payload's fields straight away; any event that
departs from that on the way (a missing or odd value, a time outside Meta's window, an error)
is handed whole to the general ``map_parts`` (``otherwise``), which gives its outcome and its
message. Both give the same result for every event (the tests compare them): the general way is
only longer, checking for each event what the config already settled (it ran 270 bytecodes per
bench event, this way 179; 1.7% of a dry run's instructions).

``usual_body`` is the same way for the compiled build, giving the server event's JSON rather
than its dict: the bytes ``orjson.dumps`` makes of what ``usual_parts`` gives (the tests compare
them), written as the fields are read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from orjson import dumps

from leadrelay.mapping.filling import region_reader, steps_runner
from leadrelay.mapping.plans import LEAD_END, LEAD_MIN, MS_END, MS_MIN, lead_digits, ms_digits
from leadrelay.mapping.sibling_loop import fill_fragments
from leadrelay.mapping.siblings import FIELD_ERRORS
from leadrelay.mapping.steps import PLAIN, SIBLINGS, Step
from leadrelay.meta.places import region_hint
from leadrelay.meta.rules import MAX_FUTURE_S, SENDABLE_AGE_S

if TYPE_CHECKING:
    from leadrelay.mapping.engine import Parts
    from leadrelay.mapping.filling import EventRun, Run
    from leadrelay.mapping.plans import Plan
    from leadrelay.outcome import FieldNote, Outcome

PartsOf = Callable[[Mapping[str, Any]], "Outcome | Parts"]
BodyParts = tuple[str, str, str, int, int, bytes, tuple["FieldNote", ...]]
"""``Parts`` with the server event as JSON bytes in place of its dict (see ``usual_body``)."""
BodyOf = Callable[[Mapping[str, Any]], "Outcome | Parts | BodyParts"]

_TIME_KEY: Final = "event_timestamp"


def usual_ways(
    *,
    names: Mapping[str, str],
    lead_key: str,
    finish_time: Callable[[Any, str | None], int],
    clock: Callable[[], float],
    steps: Sequence[Step],
    run: EventRun,
    country: Plan | None,
    custom: dict[str, Any],
    action_source: str,
    otherwise: PartsOf,
    write_json: bool,
) -> tuple[PartsOf, BodyOf]:
    """``Mapper.map_parts`` and ``Mapper.map_body`` for a config shaped as the module says:
    ``names`` are [mapping]'s fixed Facebook names, ``lead_key`` the top-level key of lead_id,
    ``finish_time`` event_time's finisher, ``steps`` the field steps that ``run`` runs (reading
    the region with ``country``, None when no field needs it), ``custom`` custom_data's
    constants (event_source last). ``map_body`` writes the JSON when asked (``write_json``: the
    compiled build) and the first step is a siblings step; else it is ``map_parts``."""
    head = usual_head(names=names, lead_key=lead_key, finish_time=finish_time, clock=clock)
    parts = usual_parts(
        head=head, run=run, custom=custom, action_source=action_source, otherwise=otherwise
    )
    if not (write_json and steps and steps[0].kind == SIBLINGS):
        return parts, parts
    first, rest = steps[0], steps[1:]
    siblings = None if country is None else country.siblings
    body = usual_body(
        head=head,
        region_of=_no_region if country is None else region_reader(country),
        region_keys=siblings[1] if siblings and siblings[0] == first.detail[0] else None,
        first=first,
        then=steps_runner(rest) if rest else None,
        then_reads=tuple(s.detail[0] for s in rest) if all(s.kind == PLAIN for s in rest) else None,
        custom=custom,
        action_source=action_source,
        otherwise=otherwise,
    )
    return parts, body


def _no_region(event: Mapping[str, Any]) -> str | None:
    """The region of an event for a config whose fields need none."""
    return None


Head = tuple[str, str, str, int, int]
"""What the usual way reads of an event before its fields: our event name, the Facebook one, the
event_id, lead_id and event_time in seconds."""


def usual_head(
    *,
    names: Mapping[str, str],
    lead_key: str,
    finish_time: Callable[[Any, str | None], int],
    clock: Callable[[], float],
) -> Callable[[Mapping[str, Any]], Head | None]:
    """``head(event)``: the usual way's reading of an event's name, event_id, lead_id and time,
    or None for an event that departs from it (see the module): ``names`` are [mapping]'s fixed
    Facebook names, ``lead_key`` the top-level key of lead_id, ``finish_time`` event_time's
    finisher."""
    errors = FIELD_ERRORS

    def head(event: Mapping[str, Any]) -> Head | None:
        ours = event.get("event_name")
        context = event.get("context")
        if type(context) is not dict or type(ours) is not str:
            return None
        raw_id = context.get("event_id")
        name = names.get(ours)
        if type(raw_id) is not str or name is None:
            return None
        raw = event.get(lead_key)
        if type(raw) is int and LEAD_MIN <= raw < LEAD_END:
            lead_id = raw
        elif type(raw) is str and lead_digits(raw):
            lead_id = int(raw)
        else:
            return None
        raw_time = context.get(_TIME_KEY)
        if type(raw_time) is int and MS_MIN <= raw_time < MS_END:
            seconds = raw_time // 1000
        elif type(raw_time) is str and ms_digits(raw_time):
            seconds = int(raw_time) // 1000
        elif raw_time is None:
            return None
        else:
            try:
                seconds = finish_time(raw_time, None)
            except errors:
                return None
        now = clock()
        event_id = raw_id.strip()
        if seconds <= now - SENDABLE_AGE_S or seconds > now + MAX_FUTURE_S or not event_id:
            return None
        return ours, name, event_id, lead_id, seconds

    return head


def usual_parts(
    *,
    head: Callable[[Mapping[str, Any]], Head | None],
    run: EventRun,
    custom: dict[str, Any],
    action_source: str,
    otherwise: PartsOf,
) -> PartsOf:
    """``map_parts`` for a config shaped as the module says: ``head`` reads what
    ``usual_head`` reads, ``run`` the field steps, ``custom`` custom_data's constants
    (event_source last)."""

    def parts(event: Mapping[str, Any]) -> Outcome | Parts:
        found = head(event)
        if found is None:
            return otherwise(event)
        ours, name, event_id, lead_id, seconds = found
        data: dict[str, Any] = {
            "event_name": name,
            "event_time": seconds,
            "action_source": action_source,
            "event_id": event_id,
        }
        user_data: dict[str, Any] = {"lead_id": lead_id}
        custom_data = custom.copy()
        notes: list[FieldNote] = []
        run(event, (data, user_data, custom_data), notes)
        data["user_data"] = user_data
        data["custom_data"] = custom_data
        return (event_id, ours, name, lead_id, seconds, data, tuple(notes) if notes else ())

    return parts


def usual_body(
    *,
    head: Callable[[Mapping[str, Any]], Head | None],
    region_of: Callable[[Mapping[str, Any]], str | None],
    region_keys: tuple[str, ...] | None,
    first: Step,
    then: Run | None,
    then_reads: tuple[tuple[str, ...], ...] | None,
    custom: dict[str, Any],
    action_source: str,
    otherwise: PartsOf,
) -> BodyOf:
    """``map_parts`` giving the server event as the JSON ``orjson.dumps`` makes of it, written
    straight away rather than built as dicts then encoded (the compiled build's, for a config
    whose first step is a siblings step: see ``Mapper.map_body``). ``region_of`` reads the
    event's region, or ``region_in`` does, from the object of the step when the country's
    sibling keys are there (``region_keys``); ``first`` is that step and ``then`` runs the
    others (None: there are none), for an event that has one of their objects when they are
    plain steps (``then_reads``, their paths: see ``any_there``).

    The siblings step writes its fields' text (``fill_fragments``); what the other steps write
    goes through orjson after them, as a dict would keep it: in the order written. An event
    whose other steps write the server event itself, or a field of the siblings step (a dict
    would keep it in that field's place), or whose step object is not a dict, takes the
    general way (``otherwise``)."""
    box_key, fields = first.detail
    heads = tuple(f",{dumps(field.name).decode()}:" for field in fields)
    taken = frozenset(field.name for field in fields)
    names: dict[str, str] = {}
    head_of = f',"action_source":{dumps(action_source).decode()},"event_id":'
    tail = f'}},"custom_data":{dumps(custom).decode()}}}'

    def body(event: Mapping[str, Any]) -> Outcome | Parts | BodyParts:
        found = head(event)
        if found is None:
            return otherwise(event)
        ours, name, event_id, lead_id, seconds = found
        box = event.get(box_key)
        if box is not None and type(box) is not dict:
            return otherwise(event)
        opening = names.get(name)
        if opening is None:
            opening = names[name] = f'{{"event_name":{dumps(name).decode()},"event_time":'
        try:
            event_json = dumps(event_id).decode()
        except TypeError:  # not JSON (a lone surrogate): the general way's dict, for the caller
            return otherwise(event)
        parts = [
            opening,
            str(seconds),
            head_of,
            event_json,
            ',"user_data":{"lead_id":',
            str(lead_id),
        ]
        notes: list[FieldNote] = []
        if region_keys is not None and box is not None:
            region = region_in(box, region_keys)
        else:
            region = region_of(event)
        if box is not None:
            fill_fragments(fields, heads, box, region, parts, notes)
        if then is not None and (then_reads is None or any_there(event, then_reads)):
            data: dict[str, Any] = {}
            user_data: dict[str, Any] = {}
            custom_data: dict[str, Any] = {}
            then(event, region, (data, user_data, custom_data), notes)
            if data or custom_data or not taken.isdisjoint(user_data):
                return otherwise(event)
            try:
                for key, value in user_data.items():
                    parts.append(f",{dumps(key).decode()}:{dumps(value).decode()}")
            except TypeError:  # not JSON: as above
                return otherwise(event)
        parts.append(tail)
        text = "".join(parts).encode()
        return (event_id, ours, name, lead_id, seconds, text, tuple(notes) if notes else ())

    return body


def region_in(box: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The region ``filling.region_reader`` reads for an event whose object ``box`` holds the
    country's sibling ``keys``: the first of them neither null nor "", through ``region_hint``
    (which says None of anything but text)."""
    region = box.get(keys[0])
    for key in keys[1:]:
        if region is None or region == "":
            region = box.get(key)
    return region_hint(region)  # None for "" too


def any_there(event: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> bool:
    """Whether plain steps reading the objects at ``paths`` may set a field of ``event``: one of
    them is there (a dict), or something other than null is on the way to it (their fields
    are then read the general way). False when every one is missing, which most events are."""
    for path in paths:
        box: Any = event
        for key in path:
            box = box.get(key)
            if type(box) is not dict:
                break
        if box is not None:
            return True
    return False
