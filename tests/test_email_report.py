"""E-mail of reports: recipients, the message, SMTP and its errors."""

from __future__ import annotations

import json
import smtplib
import ssl
from datetime import date
from pathlib import Path

import pytest

from app.errors import MailRejected, MailUnavailable, TransientError, translate_smtp
from app.settings import Settings, parse_recipients
from handlers.email_report import SmtpServer, compose_report_mail, recipients_for, send_mail
from handlers.reports import write_day_reports
from tests.smtp_server import LocalSmtpServer, free_port

RECIPIENTS = parse_recipients("tenant-acme=ops@acme.example, cto@acme.example;"
                              "*=reports@platform.example")


class TestRecipients:
    def test_a_listed_tenant_gets_its_own_and_everyone_else_gets_the_default(self) -> None:
        assert recipients_for("tenant-acme", RECIPIENTS) == ("ops@acme.example",
                                                             "cto@acme.example")
        assert recipients_for("tenant-globex", RECIPIENTS) == ("reports@platform.example",)
        assert recipients_for("*", RECIPIENTS) == ("reports@platform.example",)
        assert recipients_for("tenant-globex", parse_recipients("a=x@y")) == ()

    @pytest.mark.parametrize("text", ["tenant-acme", "acme=", "=a@x", "acme=not-an-address"])
    def test_a_malformed_list_is_a_setting_error(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_recipients(text)
        with pytest.raises(ValueError, match="report_recipients"):
            Settings(report_recipients=text)

    @pytest.mark.parametrize("url", ["http://mail.example", "smtp://", "smtp:///path"])
    def test_smtp_url_needs_the_smtp_scheme_and_a_host(self, url: str) -> None:
        with pytest.raises(ValueError, match="smtp_url"):
            Settings(smtp_url=url)

    def test_the_url_gives_host_port_tls_and_credentials(self) -> None:
        server = SmtpServer.from_url("smtps://report%40bot:s3cr%2Ft@mail.example")
        assert (server.host, server.port, server.implicit_tls) == ("mail.example", 465, True)
        assert (server.username, server.password) == ("report@bot", "s3cr/t")
        assert SmtpServer.from_url("smtp://127.0.0.1:8825").port == 8825


@pytest.fixture
def written(tmp_path: Path) -> dict[str, str]:
    [entry] = write_day_reports(tmp_path, [], day=date(2026, 12, 2), timezone="Europe/Istanbul",
                                tenant="tenant-acme")
    return entry


def test_the_message_names_tenant_and_date_and_carries_both_files(
    written: dict[str, str],
) -> None:
    report = json.loads(Path(written["json"]).read_text())
    message = compose_report_mail(report, written, sender="from@x.example",
                                  to=("a@x.example", "b@x.example"), message_id="t-1")
    assert message["Subject"] == "Daily call report: tenant-acme, 2026-12-02"
    assert message["To"] == "a@x.example, b@x.example"
    assert message["Message-ID"] == "<t-1@task-service>"
    names = [part.get_filename() for part in message.iter_attachments()]
    assert names == ["tenant-acme-2026-12-02.html", "tenant-acme-2026-12-02.csv"]
    assert "calls       0" in message.get_body().get_content()


def test_the_summary_is_called_all_tenants(tmp_path: Path) -> None:
    *_, summary = write_day_reports(tmp_path, [], day=date(2026, 12, 2), timezone="UTC",
                                    tenant=None)
    report = json.loads(Path(summary["json"]).read_text())
    message = compose_report_mail(report, summary, sender="f@x.example", to=("t@x.example",),
                                  message_id="m")
    assert message["Subject"] == "Daily call report: all tenants, 2026-12-02"
    assert [part.get_filename() for part in message.iter_attachments()] == [
        "all-tenants-2026-12-02.html", "all-tenants-2026-12-02.csv"]


class TestSending:
    def test_a_message_reaches_the_server(self, smtp: LocalSmtpServer,
                                          written: dict[str, str]) -> None:
        report = json.loads(Path(written["json"]).read_text())
        message = compose_report_mail(report, written, sender="f@x.example",
                                      to=("t@x.example",), message_id="m")
        assert send_mail(SmtpServer.from_url(smtp.url), message, timeout_s=10) == {}
        [received] = smtp.received
        assert received.rcpt_tos == ["t@x.example"] and len(received.attachments) == 2

    def test_try_again_later_is_transient(self, smtp: LocalSmtpServer,
                                          written: dict[str, str]) -> None:
        smtp.refuse_next(1)
        report = json.loads(Path(written["json"]).read_text())
        message = compose_report_mail(report, written, sender="f@x.example",
                                      to=("t@x.example",), message_id="m")
        with pytest.raises(MailUnavailable, match="451"):
            send_mail(SmtpServer.from_url(smtp.url), message, timeout_s=10)

    def test_no_server_listening_is_transient(self, written: dict[str, str]) -> None:
        report = json.loads(Path(written["json"]).read_text())
        message = compose_report_mail(report, written, sender="f@x.example",
                                      to=("t@x.example",), message_id="m")
        with pytest.raises(MailUnavailable, match="ConnectionRefusedError"):
            send_mail(SmtpServer.from_url(f"smtp://127.0.0.1:{free_port()}"), message,
                      timeout_s=5)


class TestTranslation:
    @pytest.mark.parametrize("error, kind", [
        (smtplib.SMTPDataError(451, b"try later"), MailUnavailable),
        (smtplib.SMTPDataError(554, b"spam"), MailRejected),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), MailRejected),
        (smtplib.SMTPSenderRefused(421, b"busy", "f@x"), MailUnavailable),
        (smtplib.SMTPRecipientsRefused({"a@x": (550, b"no"), "b@x": (450, b"full")}),
         MailUnavailable),
        (smtplib.SMTPRecipientsRefused({"a@x": (550, b"no such user")}), MailRejected),
        (smtplib.SMTPServerDisconnected("closed"), MailUnavailable),
        (ConnectionRefusedError(111, "refused"), MailUnavailable),
        (TimeoutError("timed out"), MailUnavailable),
        (ssl.SSLCertVerificationError("self-signed"), MailRejected),
        (smtplib.SMTPNotSupportedError("no AUTH"), MailRejected),
    ])
    def test_smtp_errors_map_by_what_to_do_next(self, error: Exception, kind: type) -> None:
        translated = translate_smtp(error)
        assert type(translated) is kind
        assert isinstance(translated, TransientError) == (kind is MailUnavailable)

    def test_other_errors_pass_through(self) -> None:
        error = ValueError("not ours")
        assert translate_smtp(error) is error
