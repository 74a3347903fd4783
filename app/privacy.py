"""Masking of phone numbers, for reports and logs."""

from __future__ import annotations

import re

# A phone number as the platform writes it: an optional +, then 7 to 15
# digits, standing alone (as in `sip:+902123394654@host` or `tel:...`).
# Digit runs inside hex ids, UUIDs, dates and decimals do not match: they
# touch letters, dashes or dots.
_PHONE = re.compile(r"(?<![\w.+-])\+?\d{7,15}(?![\w.-])")


def mask_phone(number: str) -> str:
    """Keep the last 4 digits of a phone number: `+902123394654` -> `***4654`."""
    digits = re.sub(r"\D", "", number)
    return "***" + digits[-4:] if digits else ""


# The user part of a sip:, sips: or tel: URI, whatever separators it uses
# (`tel:+1-201-555-0123`, `sip:+90 212 339 46 54@host`, `sip:ext_9021233@h`).
_URI_USER = re.compile(r"\b(sips?|tel):(\+?[\d().\- ]*\d|[^@\s\"'<>,;]+)", re.IGNORECASE)
_MIN_DIGITS = 7


def _mask_uri_user(match: re.Match[str]) -> str:
    scheme, user = match.group(1), match.group(2)
    if sum(ch.isdigit() for ch in user) < _MIN_DIGITS:
        return match.group(0)  # a name such as sip:alice@host, no number in it
    return f"{scheme}:{mask_phone(user)}"


def mask_phones_in(text: str) -> str:
    """Mask every phone number found anywhere in `text`: in URIs, and bare."""
    text = _URI_USER.sub(_mask_uri_user, text)
    return _PHONE.sub(lambda match: mask_phone(match.group(0)), text)


def mask_sip_uri(uri: str | None) -> str | None:
    """`sip:+902123394654@host` -> `sip:***4654@host`; None stays None."""
    if uri is None:
        return None
    return mask_phones_in(uri)
