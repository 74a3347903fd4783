"""Topic patterns: our matcher agrees with RabbitMQ's own bindings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import amqp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.topics import matches, matches_any, split_words
from tests.conftest import require_services

# Few distinct words, so that generated keys and patterns often meet; the
# empty word and literal `*`, `#` and `a*` in keys are the edge cases.
KEY_WORDS = st.sampled_from(["a", "b", "", "*", "#", "a*"])
PATTERN_WORDS = st.sampled_from(["a", "b", "", "*", "#", "a*"])
ROUTING_KEYS = st.lists(KEY_WORDS, max_size=5).map(".".join)
PATTERNS = st.lists(PATTERN_WORDS, max_size=5).map(".".join)


@pytest.mark.parametrize("pattern, routing_key, expected", [
    ("#", "", True),
    ("#", "a.b.c", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a.*", "a.", True),            # the empty word is a word
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.c", False),
    ("#.a", "a", True),
    ("*.#", "", False),
    ("", "", True),
    ("", "a", False),
    (".", ".", True),
    ("a*", "ab", False),            # `*` inside a word is a literal
    ("a*", "a*", True),
    ("call.*", "call.ended", True),
    ("task.#", "task.succeeded.calls.record_event", True),
])
def test_edge_cases_of_topic_patterns(pattern: str, routing_key: str, expected: bool) -> None:
    assert matches(pattern, routing_key) is expected


def test_split_words_keeps_empty_words_and_gives_none_for_the_empty_key() -> None:
    assert split_words("") == ()
    assert split_words("a..b") == ("a", "", "b")
    assert split_words(".") == ("", "")


def test_matches_any_is_true_when_one_pattern_matches() -> None:
    assert matches_any(["x.*", "call.#"], "call.ended")
    assert not matches_any([], "call.ended")


@dataclass
class Scratch:
    """A private topic exchange on the real broker, for one test module."""

    channel: Any
    exchange: str


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    require_services()
    connection = amqp.Connection("127.0.0.1:5672", connect_timeout=10)
    connection.connect()
    channel = connection.channel()
    channel.confirm_select()
    exchange = f"ts-test-{uuid.uuid4().hex[:10]}.topics"
    channel.exchange_declare(exchange, "topic", durable=False, auto_delete=False)
    try:
        yield Scratch(channel, exchange)
    finally:
        channel.exchange_delete(exchange)
        connection.close()


def routed_by_broker(scratch: Scratch, patterns: list[str], keys: list[str]) -> list[set[str]]:
    """For each pattern, the keys that the broker delivered to a queue bound with it."""
    channel = scratch.channel
    queues = [f"{scratch.exchange}.{uuid.uuid4().hex[:8]}" for _ in patterns]
    try:
        for queue, pattern in zip(queues, patterns, strict=True):
            channel.queue_declare(queue, exclusive=True, auto_delete=False)
            channel.queue_bind(queue, scratch.exchange, pattern)
        for index, key in enumerate(keys):
            # Confirmed, so it is in every queue it was routed to before the gets.
            channel.basic_publish(amqp.Message(str(index)), exchange=scratch.exchange,
                                  routing_key=key, confirm_timeout=10)
        return [_drain_keys(channel, queue, keys) for queue in queues]
    finally:
        for queue in queues:
            channel.queue_delete(queue)


def _drain_keys(channel: Any, queue: str, keys: list[str]) -> set[str]:
    received = set()
    while (message := channel.basic_get(queue, no_ack=True)) is not None:
        received.add(keys[int(message.body)])
    return received


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=st.lists(PATTERNS, min_size=1, max_size=3, unique=True),
       keys=st.lists(ROUTING_KEYS, min_size=1, max_size=6))
@example(patterns=["#", "*", "a.#.b"], keys=["", "a.b", "a", "a..b"])
@example(patterns=["", ".", "#.#"], keys=["", ".", ".."])
def test_matching_agrees_with_the_brokers_bindings(scratch: Scratch, patterns: list[str],
                                                   keys: list[str]) -> None:
    routed = routed_by_broker(scratch, patterns, keys)
    for pattern, by_broker in zip(patterns, routed, strict=True):
        ours = {key for key in keys if matches(pattern, key)}
        assert ours == by_broker, f"pattern {pattern!r}"
