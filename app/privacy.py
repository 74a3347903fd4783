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


def mask_phones_in(text: str) -> str:
    """Mask every phone number found anywhere in `text`."""
    return _PHONE.sub(lambda match: mask_phone(match.group(0)), text)


def mask_sip_uri(uri: str | None) -> str | None:
    """`sip:+902123394654@host` -> `sip:***4654@host`; None stays None."""
    if uri is None:
        return None
    return mask_phones_in(uri)
