"""The OpenAPI 3.1 description of the service, written by hand (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from leadrelay import __version__
from leadrelay.service.intake_map import MAX_EVENTS

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}, **extra}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the same request again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}

_INTAKE_DESCRIPTION = """\
Takes Commanders Act events: one event object, a JSON array of them, the HTTP Tracking API \
envelope `{"batch": [...]}`, or NDJSON (one event per line; by content type \
`application/x-ndjson`, or when the body holds several objects).

Each event is mapped with the configured mapping and stored durably **before** the answer: a 202 \
means the events are on disk and will be delivered to Meta at least once, with the same \
`event_id` on any resend, even if the service crashes right after answering. Sending the same \
events again is safe: an event whose `context.event_id` is already stored is not stored twice.

Partial success: when some items of the body cannot be read (not JSON, not an object) and others \
can, the readable ones are stored and the answer is 202 with the others listed under `rejected`, \
each with the item (`request item 3`, `request line 7`) and the reason. Events that can be read \
but not sent (e.g. no valid lead id) are recorded and listed under `rejected` too, naming the \
field. Only a body of which no event can be read is refused with 400, and then nothing is stored.
"""


def openapi_document(*, max_body_bytes: int, max_backlog: int) -> dict[str, Any]:
    """The document, with this server's limits in the descriptions."""
    event_schema = {
        "type": "object",
        "description": "A Commanders Act event: flat JSON with `event_name`, `user`, `context` "
        "and the event's own properties at the root.",
        "required": ["event_name"],
        "properties": {
            "event_name": {"type": "string", "examples": ["lead_qualified"]},
            "context": {
                "type": "object",
                "properties": {
                    "event_id": {"type": "string"},
                    "event_timestamp": {
                        "description": "Milliseconds (number or string), seconds or ISO-8601.",
                        "type": ["integer", "number", "string"],
                    },
                },
            },
            "user": {"type": "object"},
        },
        "additionalProperties": True,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "leadrelay intake",
            "version": __version__,
            "description": "Receives Commanders Act events and delivers them to Meta's "
            "Conversions API as Conversion Leads events.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "operationId": "postEvents",
                    "summary": "Store events for delivery to Meta",
                    "description": _INTAKE_DESCRIPTION,
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {
                                "schema": {
                                    "oneOf": [
                                        _ref("Event"),
                                        {"type": "array", "items": _ref("Event")},
                                        _ref("BatchEnvelope"),
                                    ]
                                }
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": _answer("Stored; see the counts and per-item problems.", "Accepted"),
                        "400": _answer(
                            "No event in the body could be read, or it holds none; nothing stored.",
                            "Malformed",
                        ),
                        "401": _answer(
                            "Missing or wrong `Authorization: Bearer` token.", "Problem"
                        ),
                        "413": _answer(
                            f"The body is larger than {max_body_bytes} bytes "
                            f"(`server.max_body_bytes`), or holds over {MAX_EVENTS} events.",
                            "Problem",
                        ),
                        "415": _answer("A `Content-Encoding` other than identity.", "Problem"),
                        "503": _answer(
                            f"Backpressure: more than {max_backlog} events wait for delivery "
                            "(`server.max_backlog`), or the store cannot take events now. "
                            "Nothing was stored; send the same request again later.",
                            "Problem",
                            headers=_RETRY_AFTER,
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "The process is up",
                    "security": [],
                    "responses": {"200": _answer("Up.", "Health")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "The store is writable and delivery is not paused",
                    "security": [],
                    "responses": {
                        "200": _answer("Ready.", "Readiness"),
                        "503": _answer(
                            "Not ready; `problems` says why and what to fix.", "Readiness"
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The `server.intake_token` of the config.",
                }
            },
            "schemas": {
                "Event": event_schema,
                "BatchEnvelope": {
                    "type": "object",
                    "required": ["batch"],
                    "properties": {"batch": {"type": "array", "items": _ref("Event")}},
                },
                "ItemProblem": {
                    "type": "object",
                    "required": ["item", "reason", "message"],
                    "properties": {
                        "item": {"type": "string", "examples": ["request item 3"]},
                        "event_id": {"type": ["string", "null"]},
                        "reason": {"type": "string", "examples": ["invalid_lead_id"]},
                        "field": {"type": ["string", "null"], "examples": ["user_data.lead_id"]},
                        "message": {"type": "string"},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": [
                        "accepted",
                        "queued",
                        "already_stored",
                        "filtered",
                        "rejected",
                        "ids",
                    ],
                    "properties": {
                        "accepted": {"type": "integer", "description": "Events read and recorded."},
                        "queued": {
                            "type": "integer",
                            "description": "Events this request queued for delivery: new ones, "
                            "and fixed ones in place of an event Meta never took.",
                        },
                        "already_stored": {
                            "type": "integer",
                            "description": "Events whose event id was stored before (a resend): "
                            "left as they were, counted once. A resent event that was refused or "
                            "filtered, and is stored so, is said as the first answer said it (in "
                            "`rejected` or `filtered`), not here. One stored for another Facebook "
                            "event name is no resend: it is in `rejected` (`event_id_reused`).",
                        },
                        "filtered": {
                            "type": "object",
                            "description": "Events not for Meta by your settings, by reason "
                            "(`unmapped`, `consent`).",
                            "additionalProperties": {"type": "integer"},
                        },
                        "rejected": {"type": "array", "items": _ref("ItemProblem")},
                        "ids": {
                            "type": "array",
                            "description": "The event id of each event to deliver, already "
                            "stored ones included.",
                            "items": {"type": "string"},
                        },
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Malformed": {
                    "allOf": [
                        _ref("Problem"),
                        {
                            "type": "object",
                            "properties": {
                                "rejected": {"type": "array", "items": _ref("ItemProblem")}
                            },
                        },
                    ]
                },
                "Health": {"type": "object", "properties": {"status": {"const": "ok"}}},
                "Readiness": {
                    "type": "object",
                    "required": ["ready"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "reason": {"type": "string", "description": "The first problem's."},
                        "message": {"type": "string", "description": "What to fix."},
                        "problems": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "reason": {
                                        "enum": [
                                            "delivery_paused",
                                            "store_unavailable",
                                            "worker_stopped",
                                        ]
                                    },
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
