"""Typed settings, named as users know them from the Commanders Act destination.

``load_config`` reads a TOML file, fills ``${VAR}`` from the environment, validates every key and
every expression, and reports *all* problems at once, each with its key. The access token is a
``SecretStr``: it never appears in a repr, an error or any output.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from leadrelay.config_env import Problem, expand, unquoted, without_unset_tokens
from leadrelay.config_problems import expression_problems, pydantic_problems
from leadrelay.meta.normalize import region_hint
from leadrelay.meta.tokens import sendable

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v25.0"
_VERSION_SEGMENT: Final = re.compile(r"/v\d+\.\d+(/|$)")  # in graph_url: a version of the path
_QUOTED_COUNTRY: Final = 16  # longest one-word default_country quoted in its error


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every reason, each with its key."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the configuration:\n{lines}")


def _text(value: Any) -> Any:
    # TOML users write ids as numbers as often as strings; both mean the same id.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_text)]


class DeliverySettings(BaseModel):
    """How events are batched and retried on their way to Meta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(1000, ge=1, le=1000)
    batch_max_age_s: float = Field(1.0, gt=0, le=3600)
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_attempts: int = Field(6, ge=1, le=100)
    max_retry_s: float = Field(600.0, gt=0, le=7 * 86400)
    retry_base_s: float = Field(0.5, gt=0, le=600)
    jobs: int = Field(1, ge=1, le=64)  # processes that read and map input files (send)
    # send and deliver stop when the event store fails every call for this long; serve and
    # worker wait for it
    store_patience_s: float = Field(60.0, gt=0, le=86400)


class ServerSettings(BaseModel):
    """The HTTP service (``leadrelay serve``) and where it keeps its data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intake_token: SecretStr | None = None
    dashboard_token: SecretStr | None = None
    data_dir: Path = Path("./leadrelay-data")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_backlog: int = Field(1_000_000, ge=1)
    # A token given as "${VAR}" whose variable is not set: left out, by name (see parse_config)
    _unset_env: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def unset_tokens(self) -> Mapping[str, str]:
        """The tokens given as ``"${VAR}"`` whose variable is not set, each with the variable's
        name (``{"intake_token": "LEADRELAY_INTAKE_TOKEN"}``): left out, as only ``serve`` needs
        them; it says which variable to set."""
        return self._unset_env

    @field_validator("intake_token", "dashboard_token")
    @classmethod
    def _token_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Spaces around it (an environment variable ending in a newline) no header can carry.
        token = value.get_secret_value().strip()
        if len(token) < 16:
            raise ValueError("is too short; use at least 16 random characters")
        return SecretStr(token)


class StoreSettings(BaseModel):
    """What the durable store keeps, and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    originals: Literal["keep", "redact", "drop"] = "keep"
    drop_originals_after_delivery: bool = True
    retention_days: float = Field(30.0, gt=0, le=36500)  # a century at most: a number
    synchronous: Literal["NORMAL", "FULL"] = "FULL"

    @property
    def retention_s(self) -> float:
        """``retention_days`` in seconds: how far back the store keeps delivered and filtered
        events (and so how far back every count of outcomes can look)."""
        return self.retention_days * 86400


class QueueSettings(BaseModel):
    """A Redis queue shared by a fleet of intake and delivery processes (absent: SQLite)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr  # may hold a password
    key_prefix: str | None = Field(None, pattern=r"^[^{}\s]+$")  # default lr:<pixel_id>
    consumer: str | None = Field(None, min_length=1)  # default hostname-pid
    claim_idle_s: float = Field(60.0, gt=0, le=86400)
    max_deliveries: int = Field(10, ge=1, le=1000)
    cluster: bool = False
    # A Redis without an append-only file loses what it holds when it stops: refused unless false.
    require_aof: bool = True

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^(rediss?|unix)://", value.get_secret_value()):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class Settings(BaseModel):
    """A validated leadrelay configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pixel_id: Text = Field(pattern=r"^\d{5,20}$")
    access_token: SecretStr
    lead_id: Text = Field(min_length=1)
    lead_event_source: Text = Field(min_length=1)
    mapping: dict[str, Text]
    smart_mapping: dict[str, Text] = Field(default_factory=dict)
    consent_category: Text | None = None
    test_event_code: Text | None = None
    graph_url: str = DEFAULT_GRAPH_URL
    api_version: str = Field(DEFAULT_API_VERSION, pattern=r"^v\d+\.\d+$")
    default_country: str | None = None
    # How the CRM writes a date with the year last when both readings are dates (03/04/1990):
    # year-first (the default) leaves such a birthdate out, as which one it meant is not in it.
    birthdate_order: Literal["year-first", "day-first", "month-first"] = "year-first"
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    queue: QueueSettings | None = None

    @field_validator("access_token")
    @classmethod
    def _token_present(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("is empty; set it to the token from Events Manager")
        # "$META_ACCESS_TOKEN" or "${META_ACCESS_TOKEN" was taken as the token itself, and
        # Meta refused it at the first send. Meta's tokens are letters and digits.
        written = re.fullmatch(r"\$\{?\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}?", token)
        if written is not None:
            raise ValueError(
                f"is written like an environment variable but is not read as one: write "
                f'"${{{written.group(1)}}}" (a dollar sign and braces)'
            )
        if not sendable(token):
            # Said without the token (pydantic would quote it); the Graph client refuses it too.
            raise ValueError(
                "contains spaces or characters a token never has; copy it again from Events Manager"
            )
        return SecretStr(token)

    @field_validator("mapping")
    @classmethod
    def _mapping_rows(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one row: your event name = Facebook event name")
        # A stage is one name to Meta: " Lead" is "Lead" (a blank row: expression_problems).
        return {ours: theirs.strip() for ours, theirs in value.items()}

    @field_validator("lead_event_source")
    @classmethod
    def _source_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank; set it to the name of your CRM (e.g. HubSpot)")
        return value.strip()

    @field_validator("test_event_code", "consent_category")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        # As Commanders Act's own settings: left empty, there is no test code, no consent filter.
        return (value.strip() or None) if value is not None else None

    @field_validator("consent_category", mode="before")
    @classmethod
    def _one_category(cls, value: Any) -> Any:
        # Commanders Act's "User Consent Category" is one category; "3,4" was compared whole
        # with each granted one, matched none, and every event was filtered.
        several = isinstance(value, list) or (
            isinstance(value, str) and (any(c in value for c in ',;|"') or "[" in value)
        )
        if several:
            raise ValueError(
                "is one consent category, as Commanders Act's User Consent Category (e.g. "
                '"3"): events are sent when user.consent_categories holds it; several are not '
                "supported"
            )
        return value

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        # The value is not quoted: a token pasted in the wrong key would be printed and logged.
        url = value.strip()
        if not re.match(r"^https?://[^/\s]+", url) or any(c.isspace() for c in url):
            raise ValueError("must be an http(s) URL such as https://graph.facebook.com")
        try:
            parts = urlsplit(url)
        except ValueError:  # a bracketed host that is no IPv6 address (its error quotes it)
            raise ValueError("has a host in [ ] that is not an IPv6 address") from None
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError(
                "must hold no user, password, query or fragment (the token goes in access_token)"
            )
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number in range
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        if _VERSION_SEGMENT.search(parts.path):
            raise ValueError(
                "holds an API version: leave it at the host (https://graph.facebook.com) and set "
                "api_version; leadrelay adds /<api_version>/<pixel_id>/events"
            )
        return url.rstrip("/")

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = region_hint(value)
        if code is None:
            # A long word is not quoted: it may be a token pasted in the wrong key (a country's
            # name is short, or has spaces).
            quoted = len(value) <= _QUOTED_COUNTRY or " " in value.strip()
            said = repr(value) if quoted else f"a {len(value)}-character value"
            raise ValueError(f"{said} is not an ISO 3166 country code (e.g. FR, US)")
        return code


_SECTIONS: dict[str, type[BaseModel]] = {
    "delivery": DeliverySettings,
    "server": ServerSettings,
    "store": StoreSettings,
    "queue": QueueSettings,
}


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Read, expand and validate a config file; raise ``ConfigError`` listing every problem."""
    source = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, [Problem("file", "not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [Problem("file", f"cannot be read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("file", f"is not valid TOML: {exc}")]) from None
    return parse_config(raw, source=source, env=os.environ if env is None else env)


def parse_config(raw: dict[str, Any], *, source: str, env: Mapping[str, str]) -> Settings:
    """Validate an already-parsed config mapping (see ``load_config``)."""
    problems: list[Problem] = []
    used: dict[str, str] = {}
    raw, unset = without_unset_tokens(raw, env)
    expanded = expand(raw, env, (), problems, used)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        # A value whose variable is not set is said once, not also as what it became ("").
        unread = {p.key for p in problems}
        found = pydantic_problems(exc, _SECTIONS, Settings)
        problems.extend(p for p in found if p.key not in unread)
    problems.extend(expression_problems(expanded))
    if problems:
        raise ConfigError(source, [unquoted(p, used) for p in problems])
    assert settings is not None
    settings.server._unset_env.update(unset)
    return settings
