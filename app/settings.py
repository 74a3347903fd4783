"""Settings, read once from the environment or a `.env` file.

A bad or missing setting stops start-up with one line that names it
(`load_settings` raises `ConfigError`); nothing downstream re-validates.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,100}$")
_ADDRESS = re.compile(r"^[^@\s,;=<>]+@[^@\s,;=<>]+$")


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    rabbitmq_url: str = "amqp://guest:guest@localhost:5672/"
    redis_url: str = "redis://localhost:6379/0"
    events_exchange: str = "sentiric_events"
    reports_dir: Path = Path("./reports")

    # Prefix of every queue and Redis key this service owns: what operators
    # see in the management UI, and what keeps test runs apart.
    service_name: str = "task-service"
    state_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    prefetch_count: int = Field(default=64, ge=1, le=10_000)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    # How long a daily report waits for the events that arrived before its
    # rollover to finish, before it is written with what is there.
    report_wait_s: float = Field(default=120.0, ge=0)
    task_max_attempts: int = Field(default=5, ge=1, le=100)
    # A message in hand each time the bridge or a worker process died is
    # parked after this many such deliveries, so that it cannot loop.
    max_deliveries: int = Field(default=5, ge=2, le=100)
    # Testing aid, off in production: `bridge_exit_on=TEXT,worker_exit_on=TEXT`
    # makes the process exit at once on a message containing TEXT.
    fault_injection: str = ""
    # E-mail of reports: no SMTP_URL, no e-mail (the task says so and succeeds).
    smtp_url: str = ""
    smtp_from: str = Field(default="task-service@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    report_recipients: str = ""
    # Call records, report index entries and task state older than this are
    # removed by the clean-up that follows each rollover.
    retention_days: int = Field(default=30, ge=1, le=3650)
    # A late call event for a day already reported regenerates the report
    # once no other late event has come for this long.
    late_report_debounce_s: float = Field(default=60.0, ge=0)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp_scheme(cls, url: str) -> str:
        return _check_scheme(url, ("amqp", "amqps"))

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        return _check_scheme(url, ("redis", "rediss", "unix"))

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, url: str) -> str:
        if url and not urlsplit(url).hostname:
            raise ValueError("needs a host, as in smtp://mail.example:25")
        return _check_scheme(url, ("smtp", "smtps")) if url else url

    @field_validator("report_recipients")
    @classmethod
    def _recipients(cls, text: str) -> str:
        parse_recipients(text)
        return text

    @field_validator("events_exchange", "service_name")
    @classmethod
    def _legible_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("use letters, digits and . _ : - (at most 100)")
        return name

    @property
    def redis_prefix(self) -> str:
        return f"{self.service_name}:"

    def queue_name(self, role: str) -> str:
        """The name of one of our queues, e.g. `task-service.inbox`."""
        return f"{self.service_name}.{role}"

    @property
    def records_ttl_s(self) -> int:
        """Expiry of call records and report index entries.

        A safety net only: the clean-up after each rollover removes them once
        they are RETENTION_DAYS old, so the expiry leaves it two days more.
        """
        return max(self.state_ttl_s, (self.retention_days + 2) * 24 * 3600)

    @property
    def recipients(self) -> dict[str, tuple[str, ...]]:
        """REPORT_RECIPIENTS as tenant -> addresses; `*` is everyone else's."""
        return parse_recipients(self.report_recipients)


def parse_recipients(text: str) -> dict[str, tuple[str, ...]]:
    """`tenant-acme=a@x,b@x;*=ops@y` -> {"tenant-acme": ("a@x", "b@x"), "*": ("ops@y",)}.

    Raises ValueError, naming the bad part, when it is not of that form.
    """
    recipients: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (part.strip() for part in text.split(";"))):
        tenant, equals, addresses = part.partition("=")
        listed = tuple(filter(None, (address.strip() for address in addresses.split(","))))
        if not equals or not tenant.strip() or not listed:
            raise ValueError(f"{part!r} is not tenant=address,address")
        if bad := [address for address in listed if not _ADDRESS.match(address)]:
            raise ValueError(f"{bad[0]!r} is not an e-mail address")
        recipients[tenant.strip()] = listed
    return recipients


def _check_scheme(url: str, schemes: tuple[str, ...]) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(schemes)}, not {scheme!r}")
    return url


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Read the settings; raise `ConfigError` naming the first bad one."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise ConfigError(f"invalid setting {name}: {error['msg']}") from None
