"""E-mail of the daily reports, chained after the report task (handlers/routes.py).

Each report the report task wrote goes to its tenant's recipients
(REPORT_RECIPIENTS), else to those listed for `*`; the all-tenants summary
goes to `*`'s. One e-mail per report, its subject naming the tenant and the
date, with the CSV and the HTML page attached. The files are read from
REPORTS_DIR, so this task runs where the report task wrote them.

Without SMTP_URL the task does nothing and says so in one log line: e-mail
is optional, and its absence is not a failure. SMTP errors are classified by
`app.errors.translate_smtp`: a 4xx reply or no connection is retried, a 5xx
reply fails the task. A retry does not send again the e-mails that already
went: each one sent is remembered in Redis under the task's id.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from celery import shared_task

from app.errors import PermanentError, translate_smtp
from app.event_task import EventTask, worker_resources
from app.settings import Settings, redact_url
from handlers.report_index import ALL_TENANTS
from handlers.report_page import format_duration
from handlers.routes import EMAIL_REPORT

log = structlog.get_logger(__name__)

@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send: SMTP_URL taken apart."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """`smtp://host:25` (plain) or `smtps://user:pass@host:465` (TLS from the start)."""
        parts = urlsplit(url)
        implicit_tls = parts.scheme == "smtps"
        return cls(host=parts.hostname or "", port=parts.port or (465 if implicit_tls else 25),
                   implicit_tls=implicit_tls,
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None)


def recipients_for(tenant: str, recipients: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The tenant's own recipients, else those of `*`; () when neither is listed."""
    return recipients.get(tenant) or recipients.get(ALL_TENANTS, ())


def compose_report_mail(
    report: dict[str, Any], files: dict[str, str], *, sender: str, to: tuple[str, ...],
    message_id: str,
) -> EmailMessage:
    """The e-mail of one report: figures in the text, CSV and HTML attached."""
    tenant = "all tenants" if report["tenantId"] == ALL_TENANTS else report["tenantId"]
    message = EmailMessage()
    message["Subject"] = f"Daily call report: {tenant}, {report['date']}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(datetime.now(UTC))
    # The same id on every attempt, so that a receiving system can tell a
    # resent e-mail from a new one.
    message["Message-ID"] = f"<{message_id}@task-service>"
    message.set_content(
        f"Calls of {tenant} on {report['date']} ({report['timezone']}):\n\n"
        f"  calls       {report['calls']}\n"
        f"  answered    {report['answered']}\n"
        f"  unanswered  {report['unanswered']}\n"
        f"  talk time   {format_duration(report['talkSeconds'])} in total, "
        f"{format_duration(report['averageTalkSeconds'])} on average\n\n"
        "Attached: the page with the charts (HTML, opens without a network) "
        "and one row per call (CSV).\n")
    stem = f"{_file_safe(report['tenantId'])}-{report['date']}"
    for kind, subtype in (("html", "html"), ("csv", "csv")):
        message.add_attachment(Path(files[kind]).read_bytes(), maintype="text", subtype=subtype,
                               filename=f"{stem}.{kind}")
    return message


def send_mail(server: SmtpServer, message: EmailMessage, timeout_s: float) -> dict[str, Any]:
    """Send one e-mail; return the recipients refused (others got it).

    Raises MailUnavailable (retry) or MailRejected (give up).
    """
    try:
        if server.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout_s,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=timeout_s)
        with client:
            if server.username:
                client.login(server.username, server.password or "")
            return dict(client.send_message(message))
    except Exception as exc:  # every error is classified, none is lost
        raise translate_smtp(exc) from exc


@shared_task(base=EventTask, name=EMAIL_REPORT, bind=True)
def email_report(self: EventTask, event: dict[str, Any], meta: dict[str, Any],
                 written: dict[str, Any] | None = None) -> dict[str, Any]:
    """E-mail each report that the report task before this one wrote."""
    settings = worker_resources().settings
    if not settings.smtp_url:
        log.info("reports not e-mailed: SMTP_URL is not set", event_key=meta["eventKey"])
        return {"sent": 0, "skipped": "SMTP_URL not set"}
    if not written or "reports" not in written:
        raise PermanentError("no report to e-mail: the report task returned none")

    server = SmtpServer.from_url(settings.smtp_url)
    sent = [outcome for entry in written["reports"]
            if (outcome := _email_one(self.request.id, settings, server, entry, meta))]
    return {"sent": len(sent), "smtp": redact_url(settings.smtp_url), "emails": sent}


def _email_one(task_id: str, settings: Settings, server: SmtpServer, entry: dict[str, Any],
               meta: dict[str, Any]) -> dict[str, Any] | None:
    tenant = entry["tenantId"]
    bound = log.bind(event_key=meta["eventKey"], tenant=tenant, task_id=task_id)
    to = recipients_for(tenant, settings.recipients)
    if not to:
        bound.info("report not e-mailed: REPORT_RECIPIENTS lists no one for it")
        return None
    sent_key = f"{settings.redis_prefix}mailed:{task_id}"
    redis_client = worker_resources().redis
    if redis_client.sismember(sent_key, tenant):
        bound.info("report already e-mailed by an earlier attempt")
        return {"tenantId": tenant, "recipients": len(to), "alreadySent": True}

    report = json.loads(Path(entry["json"]).read_text(encoding="utf-8"))
    message = compose_report_mail(report, entry, sender=settings.smtp_from, to=to,
                                  message_id=f"{task_id}.{_file_safe(tenant)}")
    refused = send_mail(server, message, settings.smtp_timeout_s)
    redis_client.sadd(sent_key, tenant)
    redis_client.expire(sent_key, settings.state_ttl_s)
    bound.info("report e-mailed", recipients=len(to), refused=len(refused))
    return {"tenantId": tenant, "recipients": len(to), "refused": len(refused)}


def _file_safe(tenant: str) -> str:
    return "all-tenants" if tenant == ALL_TENANTS else \
        "".join(c if c.isalnum() or c in "._-" else "_" for c in tenant)
