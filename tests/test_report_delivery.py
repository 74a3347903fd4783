"""Reports and their e-mail, end to end: the rollover's chain in the real service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.testing import ServiceRun
from tests.conftest import require_services
from tests.smtp_server import LocalSmtpServer

DATE = "2026-12-02"
TZ = "Europe/Istanbul"
RECIPIENTS = "tenant-acme=ops@acme.example,cto@acme.example;*=reports@platform.example"


def _call(call_id: str, tenant: str, start: str, end: str, *, answered: str | None = None,
          reason: str = "normal_clearing") -> list[dict[str, Any]]:
    day = f"{DATE}T"
    events = [{"eventType": "call.started", "callId": call_id, "timestamp": f"{day}{start}+03:00",
               "from": "sip:+902123394654@pbx.example", "to": "sip:+902124919852@pbx.example",
               "dialplanResolution": {"tenantId": tenant}}]
    if answered:
        events.append({"eventType": "call.answered", "callId": call_id,
                       "timestamp": f"{day}{answered}+03:00"})
    events.append({"eventType": "call.ended", "callId": call_id, "timestamp": f"{day}{end}+03:00",
                   "reason": reason})
    return events


CALLS = [
    *_call("c-a1", "tenant-acme", "10:00:00", "10:02:10", answered="10:00:10"),
    *_call("c-a2", "tenant-acme", "11:00:00", "11:00:30", reason="no_answer"),
    *_call("c-g1", "tenant-globex", "12:00:00", "12:10:05", answered="12:00:05"),
]


def rollover(tenant: str | None = None) -> dict[str, Any]:
    body = {"eventType": "day.rolled_over", "timestamp": "2026-12-02T21:00:02Z", "date": DATE,
            "timezone": TZ}
    return body | ({"tenantId": tenant} if tenant else {})


def write_recording(path: Path, events: list[dict[str, Any]]) -> Path:
    lines = [json.dumps({"t": 0, "routing_key": event["eventType"], "body": event,
                         "properties": {"content_type": "application/json"}})
             for event in events]
    path.write_text("\n".join(lines) + "\n")
    return path


def completions_of(run: ServiceRun, task_name: str) -> list[dict[str, Any]]:
    return [c.body for c in run.read_completions() if c.body["taskName"] == task_name]


def _service(tmp_path: Path, **env: str) -> ServiceRun:
    require_services()
    run = ServiceRun(tmp_path, extra_env=env)
    run.tap_completions()
    run.start()
    return run


def test_a_tenantless_rollover_mails_each_tenant_and_the_summary_with_both_files(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    run = _service(tmp_path, SMTP_URL=smtp.url, REPORT_RECIPIENTS=RECIPIENTS,
                   SMTP_FROM="reports@task-service.example")
    try:
        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover()]))
        run.wait_until_done(events=len(CALLS) + 1, timeout_s=120)

        mails = {mail.message["Subject"]: mail for mail in smtp.received}
        assert sorted(mails) == [f"Daily call report: {name}, {DATE}" for name in
                                 ("all tenants", "tenant-acme", "tenant-globex")]
        acme = mails[f"Daily call report: tenant-acme, {DATE}"]
        assert sorted(acme.rcpt_tos) == ["cto@acme.example", "ops@acme.example"]
        assert acme.mail_from == "reports@task-service.example"
        assert mails[f"Daily call report: all tenants, {DATE}"].rcpt_tos == [
            "reports@platform.example"]
        for mail in mails.values():
            assert sorted(name.rsplit(".", 1)[1] for name in mail.attachments) == ["csv", "html"]
        acme_csv = acme.attachments[f"tenant-acme-{DATE}.csv"].decode()
        assert acme_csv.count("\n") == 3 and "+90" not in acme_csv  # header and two calls
        assert b"<svg" in acme.attachments[f"tenant-acme-{DATE}.html"]

        state = run.state.lookup(f"day.rolled_over:*:{DATE}")
        assert state is not None and state["state"] == "succeeded"
        # forecast, report, e-mail (chained) and clean-up
        assert state["tasksTotal"] == 4 and len(state["taskIds"]) == 4
        [mailed] = completions_of(run, "reports.email_report")
        assert mailed["eventType"] == "task.succeeded" and mailed["result"]["sent"] == 3
    finally:
        run.close()


def test_a_rollover_processed_again_writes_the_same_reports(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    run = _service(tmp_path)
    try:
        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover()]))
        run.wait_until_done(events=len(CALLS) + 1, timeout_s=120)
        first = _report_files(run.reports_dir)
        assert len(first) == 9  # acme, globex and the summary: JSON, CSV, HTML each

        again = run.cli("publish", "day.rolled_over", json.dumps(rollover()),
                        "--message-id", "rollover-again")
        assert again.returncode == 0, again.stderr
        run.wait_until_done(events=len(CALLS) + 2, timeout_s=120)
        assert _report_files(run.reports_dir) == first
    finally:
        run.close()


def _report_files(folder: Path) -> dict[str, str]:
    """Each report file's text, without its generation time."""
    files = {}
    for path in sorted(folder.rglob("*.*")):
        generated = json.loads(path.with_suffix(".json").read_text())["generatedAt"]
        files[str(path.relative_to(folder))] = path.read_text().replace(generated, "")
    return files


def test_an_smtp_server_saying_try_later_gets_the_email_on_a_later_attempt(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    smtp.refuse_next(1)
    run = _service(tmp_path, SMTP_URL=smtp.url, REPORT_RECIPIENTS="*=reports@platform.example")
    try:
        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover("tenant-globex")]))
        run.wait_until_done(events=len(CALLS) + 1, timeout_s=120)
        assert [mail.message["Subject"] for mail in smtp.received] == [
            f"Daily call report: tenant-globex, {DATE}"]
        [mailed] = completions_of(run, "reports.email_report")
        assert mailed["eventType"] == "task.succeeded" and mailed["attempts"] == 2
        assert "transient error, retrying [1/5]" in run.log_text()
    finally:
        run.close()


def test_without_smtp_the_email_task_is_skipped_with_one_log_line(tmp_path: Path) -> None:
    run = _service(tmp_path)
    try:
        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover("tenant-acme")]))
        run.wait_until_done(events=len(CALLS) + 1, timeout_s=120)
        [mailed] = completions_of(run, "reports.email_report")
        assert mailed["eventType"] == "task.succeeded"
        assert mailed["result"] == {"sent": 0, "skipped": "SMTP_URL not set"}
        assert run.log_text().count("reports not e-mailed: SMTP_URL is not set") == 1
        assert (run.reports_dir / "tenant-acme" / f"{DATE}.html").exists()
    finally:
        run.close()


def test_when_the_report_fails_the_email_after_it_is_recorded_as_not_run(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("reports cannot be written under a file")
    run = _service(tmp_path, REPORTS_DIR=str(blocked), SMTP_URL=smtp.url,
                   REPORT_RECIPIENTS="*=reports@platform.example")
    try:
        run.replay(write_recording(tmp_path / "day.jsonl", [*CALLS, rollover("tenant-acme")]))
        run.wait_until_done(events=len(CALLS) + 1, timeout_s=120)
        [report] = completions_of(run, "reports.daily_report")
        [mailed] = completions_of(run, "reports.email_report")
        assert report["eventType"] == "task.failed"
        assert mailed["eventType"] == "task.failed" and mailed["attempts"] == 0
        assert mailed["error"]["type"] == "UpstreamFailed"
        state = run.state.lookup(f"day.rolled_over:tenant-acme:{DATE}")
        assert state is not None and state["state"] == "failed" and state["tasksFailed"] == 2
        assert state["tasksSucceeded"] == 2  # the forecast before it, and the clean-up
        assert smtp.received == []
    finally:
        run.close()


def test_a_report_chained_after_the_forecast_can_defer_and_still_run(tmp_path: Path) -> None:
    """An earlier event that never finishes: the forecast waits out REPORT_WAIT_S, then the
    report (chained after it) waits too; its deferral must keep the forecast's result and
    its own arguments."""
    require_services()
    run = ServiceRun(tmp_path, extra_env={"REPORT_WAIT_S": "3"})
    try:
        run.tap_completions()
        run.start()
        run.replay(write_recording(tmp_path / "day.jsonl", CALLS))
        run.wait_until_done(events=len(CALLS))
        run.redis.zadd(run.state.keys.inflight, {"stuck-earlier-event": 0})
        run.replay(write_recording(tmp_path / "rollover.jsonl", [rollover("tenant-acme")]))
        path = run.reports_dir / "tenant-acme" / f"{DATE}.json"
        run.wait_for(path.exists, 90, "the report, after its wait")
        assert json.loads(path.read_text())["calls"] == 2
        run.wait_for(lambda: any(c.routing_key == "task.succeeded.reports.daily_report"
                                 for c in run.read_completions()), 30, "its completion event")
        history = run.state.lookup(f"day.rolled_over:tenant-acme:{DATE}")["history"]
        waited = {entry["taskId"] for entry in history if entry["state"] == "waiting"}
        assert len(waited) >= 3, history  # forecast, clean-up and the report each waited
    finally:
        run.close()
