"""Exact decimals: check an input against ``decimal(precision, scale)``, never via float.

msgspec decodes both JSON forms (``"12.34"`` and ``12.34``) straight from the
text into :class:`decimal.Decimal`; :func:`fit` then refuses anything that is not
finite, has more fractional digits than the scale, or more digits than the
precision, and returns the value with exactly ``scale`` fractional digits — the
stored form, which ``pyarrow.json`` reads into ``decimal128(precision, scale)``.
"""

from __future__ import annotations

import decimal
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from courier.schema.avro import Decimal

_TEXT = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?")
#: Exact arithmetic wide enough for any decimal128 value (38 digits) and more.
_CONTEXT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])


def fit(value: decimal.Decimal, precision: int, scale: int) -> decimal.Decimal:
    """``value`` with exactly ``scale`` fractional digits; ValueError if it does not fit."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    if value and value.adjusted() >= precision - scale:
        raise ValueError(
            f"{value} has more than {precision - scale} digit(s) before the decimal point "
            f"(decimal({precision},{scale}))"
        )
    try:
        out = value.quantize(decimal.Decimal(1).scaleb(-scale), context=_CONTEXT)
    except (decimal.Inexact, decimal.InvalidOperation):
        raise ValueError(
            f"{value} has more than {scale} digit(s) after the decimal point "
            f"(decimal({precision},{scale}))"
        ) from None
    return out


def from_twos_complement(raw: bytes, scale: int) -> decimal.Decimal:
    """The value of Avro's binary decimal form: big-endian two's complement, unscaled."""
    unscaled = int.from_bytes(raw, "big", signed=True) if raw else 0
    return decimal.Decimal(unscaled).scaleb(-scale, context=_CONTEXT)


def default_value(t: Decimal, v: Any) -> decimal.Decimal | None:
    """The value of an Avro JSON default of a decimal (its bytes as a latin-1 string),
    or None if ``v`` is not one (wrong type, wrong fixed size, does not fit)."""
    if not isinstance(v, str) or _TEXT.fullmatch(v):
        # "12.34" would be read as the bytes of the characters: refuse the ambiguity.
        return None
    try:
        raw = v.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if t.fixed_size is not None and len(raw) != t.fixed_size:
        return None
    try:
        return fit(from_twos_complement(raw, t.scale), t.precision, t.scale)
    except ValueError:
        return None
