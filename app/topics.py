"""Topic patterns with RabbitMQ's exact semantics.

A routing key and a pattern are both split on `.` into words; an empty
string has no words at all, while `a..b` has an empty middle word. In a
pattern, a word that is exactly `*` matches exactly one word (an empty word
too), a word that is exactly `#` matches zero or more words, and every other
word (`a*` included) matches only itself. So `#` matches every key, the empty
key included, `*` does not match the empty key, and `a.#.b` matches `a.b`.

This is the one place where the service matches routing keys itself (replay
filters, the bindings the test harness expects the bridge to have).
`tests/test_topics.py` checks it against the broker's own bindings.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

ONE_WORD = "*"
ANY_WORDS = "#"


def split_words(text: str) -> tuple[str, ...]:
    """The words of a routing key or pattern; the empty string has none."""
    return tuple(text.split(".")) if text else ()


def matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic exchange routes `routing_key` to a binding of `pattern`."""
    words = _pattern_words(pattern)
    positions = _skip_any_words(words, {0})
    for word in split_words(routing_key):
        positions = _skip_any_words(words, _advance(words, positions, word))
        if not positions:
            return False
    return len(words) in positions


def matches_any(patterns: Iterable[str], routing_key: str) -> bool:
    """Whether any of `patterns` matches `routing_key`."""
    return any(matches(pattern, routing_key) for pattern in patterns)


@lru_cache(maxsize=1024)
def _pattern_words(pattern: str) -> tuple[str, ...]:
    return split_words(pattern)


def _advance(words: tuple[str, ...], positions: set[int], word: str) -> set[int]:
    # Pattern positions reachable after consuming one word of the key. A `#`
    # may swallow the word and stay where it is.
    reached = set()
    for position in positions:
        if position == len(words):
            continue
        expected = words[position]
        if expected == ANY_WORDS:
            reached.add(position)
        elif expected in (ONE_WORD, word):
            reached.add(position + 1)
    return reached


def _skip_any_words(words: tuple[str, ...], positions: set[int]) -> set[int]:
    # A `#` may also match no word at all: step past it without consuming.
    closed = set(positions)
    pending = list(positions)
    while pending:
        position = pending.pop()
        if position < len(words) and words[position] == ANY_WORDS and position + 1 not in closed:
            closed.add(position + 1)
            pending.append(position + 1)
    return closed
