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
