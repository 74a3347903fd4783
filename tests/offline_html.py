"""What in an HTML page would make a browser reach for the network."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Attributes that load or link something, and tags that embed or run something.
_LOADING_ATTRIBUTES = {"src", "href", "xlink:href", "srcset", "data", "action", "poster",
                       "background", "formaction", "manifest"}
_EMBEDDING_TAGS = {"script", "link", "iframe", "object", "embed", "img", "image", "base",
                   "audio", "video", "source", "foreignobject"}
_CSS_LOADS = re.compile(r"url\(\s*['\"]?(?!#)|@import", re.I)
_ANY_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://|(?<![:\w])//[\w.-]+\.[a-z]", re.I)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _EMBEDDING_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name in _LOADING_ATTRIBUTES and not (value or "").startswith("#"):
                self.problems.append(f"<{tag} {name}={value!r}>")
            if name == "style" and value and _CSS_LOADS.search(value):
                self.problems.append(f"<{tag} style={value!r}>")


def network_loads(page: str) -> list[str]:
    """Everything in `page` that would load from elsewhere; [] when self-contained."""
    collector = _Collector()
    collector.feed(page)
    collector.close()
    problems = collector.problems
    problems += [f"CSS {match.group(0)!r}" for match in _CSS_LOADS.finditer(page)]
    problems += [f"URL {match.group(0)!r}" for match in _ANY_URL.finditer(page)]
    return problems
