"""Phone masking, URL redaction, and the translation of library errors."""

from __future__ import annotations

import aiormq.exceptions
import amqp.exceptions
import pytest
import redis.exceptions

from app.errors import (
    BrokerRefused,
    BrokerUnavailable,
    ParkMessage,
    StateUnavailable,
    TransientError,
    redact_credentials,
    translate,
)
from app.logs import scrub_secrets
from app.privacy import mask_phone, mask_phones_in
from app.settings import redact_url


class TestMasking:
    def test_keeps_the_last_four_digits(self) -> None:
        assert mask_phone("+902123394654") == "***4654"

    @pytest.mark.parametrize("text, masked", [
        ("sip:+902123394654@sip.tenant-acme.example", "sip:***4654@sip.tenant-acme.example"),
        ("tel:02125490672", "tel:***0672"),
        ("caller +12127123573 hung up", "caller ***3573 hung up"),
        ("sip:+90-212-339-4654@x", "sip:***4654@x"),
        ("tel:+90 212 339 46 54", "tel:***4654"),
        ("tel:+1 (212) 555-0199 called", "tel:***0199 called"),
        ("sip:user-902123394655@x", "sip:***4655@x"),
        ("sip:ext_902123394656@x", "sip:***4656@x"),
        ("sip:902123394657.1@x", "sip:***6571@x"),
        ('{"from": "sip:+902123394654@h"}', '{"from": "sip:***4654@h"}'),
    ])
    def test_masks_numbers_in_text(self, text: str, masked: str) -> None:
        assert mask_phones_in(text) == masked

    @pytest.mark.parametrize("text", [
        "2026-12-02T08:11:58.112359+03:00", "4b018c9f-a7ec-c7ee-126e-90a3f3a71b00",
        "9417bb4319fcafba9bb308bd4001bd9b", "1764683240.401576", "contactId 11850",
        "sip:alice@pbx.example", "sip:dp-tenant-acme-inbound@x",
    ])
    def test_leaves_ids_timestamps_and_small_numbers_alone(self, text: str) -> None:
        assert mask_phones_in(text) == text

    def test_log_processor_scrubs_nested_values(self) -> None:
        event = {"event": "x", "from": "sip:+902123394654@h",
                 "extra": {"url": "amqp://u:hunter2@host/", "list": ["+12127123573"]}}
        scrubbed = scrub_secrets(None, "info", event)
        assert "hunter2" not in str(scrubbed) and "902123394654" not in str(scrubbed)


class TestRedaction:
    def test_url_password_is_hidden(self) -> None:
        assert redact_url("amqps://user:s3cret@mq.example:5671/vh") == \
            "amqps://user:***@mq.example:5671/vh"
        assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"

    def test_credentials_in_free_text_are_hidden(self) -> None:
        text = "cannot connect to rediss://:s3cret@cache:6380/0 now"
        assert "s3cret" not in redact_credentials(text)


class TestTranslate:
    def test_redis_errors_are_transient(self) -> None:
        error = translate(redis.exceptions.ConnectionError("refused"))
        assert isinstance(error, StateUnavailable) and isinstance(error, TransientError)

    def test_lost_broker_connections_are_transient(self) -> None:
        for exc in (aiormq.exceptions.AMQPConnectionError("x"),
                    amqp.exceptions.RecoverableConnectionError("x"), ConnectionRefusedError()):
            assert isinstance(translate(exc), BrokerUnavailable)

    def test_channel_refusals_are_not_called_unavailable(self) -> None:
        error = translate(amqp.exceptions.PreconditionFailed("inequivalent arg"))
        assert isinstance(error, BrokerRefused)

    def test_timeouts_are_transient(self) -> None:
        assert isinstance(translate(TimeoutError()), TransientError)

    def test_our_errors_and_unknown_errors_pass_through(self) -> None:
        ours = ParkMessage("schema", "x")
        assert translate(ours) is ours
        bug = KeyError("x")
        assert translate(bug) is bug

    def test_translated_messages_carry_no_password(self) -> None:
        error = translate(ConnectionError("amqp://guest:topsecret@host:5672/ refused"))
        assert "topsecret" not in str(error)
