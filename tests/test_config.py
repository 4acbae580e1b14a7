"""Config loading: names users know, ${ENV} secrets, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import BASE, make_settings
from leadrelay.config import ConfigError, load_config, parse_config

GOOD = """
pixel_id = "123456789012345"
access_token = "${META_ACCESS_TOKEN}"
lead_id = "{{id}}"
lead_event_source = "HubSpot"
consent_category = "3"
test_event_code = "TEST12345"
graph_url = "http://127.0.0.1:9/"
default_country = "fr"

[mapping]
generate_lead = "Lead"
lead_qualified = "Marketing Qualified Lead"
crm_stage_changed = "{{crm_stage}}"

[smart_mapping]
"user_data.em" = "{{user.work_email}}"
"user_data.ph" = ""
"custom_data.value" = "{{value}}"

[delivery]
batch_size = 500
"""


def test_good_config_loads_with_env_secret(tmp_path: Path) -> None:
    path = tmp_path / "leadrelay.toml"
    path.write_text(GOOD)
    settings = load_config(path, env={"META_ACCESS_TOKEN": "EAAB-very-secret"})
    assert settings.access_token.get_secret_value() == "EAAB-very-secret"
    assert settings.graph_url == "http://127.0.0.1:9"
    assert settings.default_country == "FR"
    assert settings.delivery.batch_size == 500
    assert settings.mapping["crm_stage_changed"] == "{{crm_stage}}"
    assert "EAAB-very-secret" not in repr(settings)
    assert "EAAB-very-secret" not in str(settings)


def test_all_problems_reported_at_once_with_keys() -> None:
    raw = {
        "pixel_id": "not-digits",
        "access_token": "${MISSING_TOKEN}",
        "lead_id": "=COALESCE(id,",
        "mapping": {"generate_lead": "=LOWR(x)"},
        "smart_mapping": {"user_data.email": "{{user.email}}", "action_source": "website"},
        "lead_event_sorce": "HubSpot",
        "delivery": {"batch_size": 5000},
        "birthdate_order": "DD/MM/YYYY",
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="x.toml", env={})
    text = str(info.value)
    keys = {p.key for p in info.value.problems}
    assert {
        "pixel_id",
        "access_token",
        "lead_id",
        "mapping.generate_lead",
        'smart_mapping."user_data.email"',
        "smart_mapping.action_source",
        "lead_event_sorce",
        "lead_event_source",
        "delivery.batch_size",
        "birthdate_order",
    } <= keys
    assert "'year-first', 'day-first' or 'month-first'" in text
    assert "MISSING_TOKEN is not set" in text
    assert "did you mean 'lead_event_source'" in text
    assert "LOWER" in text  # the suggestion for the misspelt function
    assert "position" in text


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("pixel_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_token_never_in_errors() -> None:
    raw = {**BASE, "access_token": "EAAB-secret-in-error", "pixel_id": "bad"}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="x", env={})
    assert "EAAB-secret-in-error" not in str(info.value)


SECRET = "EAACANARYtoken123456789"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (SECRET, "must be an http(s) URL"),  # a token pasted in the wrong key
        ("https://graph.facebook.com/v25.0", "holds an API version"),
        ("https://graph.facebook.com/v25.0/", "holds an API version"),
        ("https://proxy.example/meta/v24.0/", "holds an API version"),
        (f"https://graph.facebook.com/?access_token={SECRET}", "no user, password, query"),
        (f"https://{SECRET}@graph.facebook.com", "no user, password, query"),
        (f"https://graph.facebook.com:{SECRET}", "port that is not a number"),
        ("https://graph.facebook.com:99999", "port that is not a number"),
        ("https://graph.facebook.com/#x", "no user, password, query"),
        (f"http://[{SECRET}]/", "not an IPv6 address"),
    ],
)
def test_a_graph_url_that_cannot_lead_to_the_events_endpoint_is_refused_unquoted(
    url: str, said: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(graph_url=url)
    (problem,) = info.value.problems
    assert problem.key == "graph_url" and said in problem.message
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url", ["https://graph.facebook.com", "http://127.0.0.1:8090/", "https://proxy.example/meta"]
)
def test_a_graph_url_of_a_host_or_a_proxy_path_is_taken(url: str) -> None:
    assert make_settings(graph_url=url).graph_url == url.rstrip("/")


def test_a_long_default_country_is_not_quoted() -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(default_country=SECRET)
    assert SECRET not in str(info.value) and "23-character value" in str(info.value)


def test_empty_mapping_and_unknown_country() -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(mapping={}, default_country="Atlantis")
    keys = {p.key for p in info.value.problems}
    assert keys == {"mapping", "default_country"}


def test_ids_may_be_numbers_in_toml() -> None:
    settings = make_settings(pixel_id=123456789012345, consent_category=4)
    assert settings.pixel_id == "123456789012345"
    assert settings.consent_category == "4"


def test_blank_names_are_refused_with_their_keys() -> None:
    """A blank Lead Event Source or Facebook event name, or a smart mapping that removes a field
    Meta needs, is a problem of the config, not of every event later."""
    with pytest.raises(ConfigError) as info:
        make_settings(
            lead_event_source="   ",
            mapping={"lead_created": "  ", "deal_won": "", "lead_qualified": "Lead"},
            smart_mapping={"custom_data.lead_event_source": "", "user_data.lead_id": ""},
        )
    found = {p.key: p.message for p in info.value.problems}
    assert set(found) == {
        "lead_event_source",
        "mapping.lead_created",
        "mapping.deal_won",
        'smart_mapping."custom_data.lead_event_source"',
        'smart_mapping."user_data.lead_id"',
    }
    assert "name of your CRM" in found["lead_event_source"]
    assert "cannot be removed" in found['smart_mapping."user_data.lead_id"']


def test_lead_event_source_expression_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(lead_event_source="HubSpot {{")
    assert [p.key for p in info.value.problems] == ["lead_event_source"]


def test_names_trimmed_and_blank_optional_texts_unset() -> None:
    settings = make_settings(
        lead_event_source=" HubSpot ",
        mapping={"lead_created": " Lead "},
        consent_category=" ",
        test_event_code="",
    )
    assert settings.lead_event_source == "HubSpot"
    assert settings.mapping == {"lead_created": "Lead"}
    assert settings.consent_category is None  # no consent filter, as Commanders Act's own
    assert settings.test_event_code is None


@pytest.mark.parametrize("token", ["EAAB secret", "EAAB-sécret", "EAAB\tx"])
def test_a_token_no_token_has_is_refused_without_quoting_it(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(access_token=token)
    assert [p.key for p in info.value.problems] == ["access_token"]
    assert token not in str(info.value) and "secret" not in str(info.value)


def test_spaces_around_a_token_are_dropped() -> None:
    token = make_settings(access_token=" EAAB-token\n").access_token.get_secret_value()
    assert token == "EAAB-token"


def test_server_tokens_lose_the_spaces_no_header_can_carry() -> None:
    """An intake token from an environment variable ending in a newline: the client's header
    cannot hold the newline, so kept, no request could ever be let in."""
    server = make_settings(
        server={
            "intake_token": "intake-token-0123456789\n",
            "dashboard_token": " dash-0123456789-x ",
        }
    ).server
    assert server.intake_token is not None and server.dashboard_token is not None
    assert server.intake_token.get_secret_value() == "intake-token-0123456789"
    assert server.dashboard_token.get_secret_value() == "dash-0123456789-x"


@pytest.mark.parametrize("days", [float("inf"), 1e300])
def test_retention_is_a_number_of_days_not_forever(days: float) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(store={"retention_days": days})
    assert [p.key for p in info.value.problems] == ["store.retention_days"]


def test_a_secret_from_the_environment_is_not_quoted_in_any_error() -> None:
    """The environment is where tokens are kept: one put in the wrong key (an expression, the
    default country) was quoted by the error, then printed and logged."""
    raw = {
        **BASE,
        "default_country": "${TOK}",
        "smart_mapping": {"user_data.em": "=${TOK}(user.email)"},
        "mapping": {"lead_qualified": "{{${TOK}}}", "x": "Lead"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="x", env={"TOK": SECRET})
    said = str(info.value)
    assert SECRET not in said and "${TOK}" in said, said
    assert {p.key for p in info.value.problems} >= {
        "default_country",
        'smart_mapping."user_data.em"',
    }


def test_serve_tokens_whose_variables_are_not_set_are_left_out_for_serve_to_name() -> None:
    """The README's [server] block (tokens as "${VAR}") stopped every command where those
    variables were not set, send and status included, with two errors for each ("is not set"
    and "is too short"). Only serve needs the tokens: left out, it says which variable to set."""
    server = {"intake_token": "${LR_INTAKE}", "dashboard_token": "${LR_DASH}"}
    settings = parse_config({**BASE, "server": server}, source="x.toml", env={})
    assert settings.server.intake_token is None and settings.server.dashboard_token is None
    assert settings.server.unset_tokens == {
        "intake_token": "LR_INTAKE",
        "dashboard_token": "LR_DASH",
    }
    env = {"LR_INTAKE": " intake-token-0123456789 "}
    settings = parse_config({**BASE, "server": server}, source="x.toml", env=env)
    token = settings.server.intake_token
    assert token is not None and token.get_secret_value() == "intake-token-0123456789"
    assert settings.server.unset_tokens == {"dashboard_token": "LR_DASH"}
    # Inside a longer value the variable is needed: said once, not also as "too short".
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "server": {"intake_token": "x${LR_INTAKE}"}}, source="x", env={})
    assert [(p.key, p.message) for p in info.value.problems] == [
        ("server.intake_token", "environment variable LR_INTAKE is not set")
    ]


@pytest.mark.parametrize("category", ["3,4", "3;4", '["3","4"]', ["3", "4"]])
def test_several_consent_categories_are_refused_not_compared_whole(category: object) -> None:
    """``consent_category = "3,4"`` passed ``validate``, then was compared whole with each
    category the user granted: no event matched, every one was filtered, and the send exited 0.
    The setting is one category, as Commanders Act's User Consent Category."""
    with pytest.raises(ConfigError) as info:
        make_settings(consent_category=category)
    (problem,) = info.value.problems
    assert problem.key == "consent_category"
    assert "is one consent category" in problem.message


@pytest.mark.parametrize(
    "written",
    ["$META_ACCESS_TOKEN", "${META_ACCESS_TOKEN", "$META_ACCESS_TOKEN}", "${ META_ACCESS_TOKEN }"],
)
def test_a_token_written_like_a_variable_says_how_to_write_one(written: str) -> None:
    """``access_token = "$META_ACCESS_TOKEN"`` passed ``validate`` and was sent as the token
    itself (Meta: invalid OAuth access token)."""
    with pytest.raises(ConfigError) as info:
        make_settings(access_token=written)
    (problem,) = info.value.problems
    assert problem.key == "access_token"
    assert 'write "${META_ACCESS_TOKEN}"' in problem.message
