"""Bounds for scenario values: inclusive numeric ranges and the longest free text allowed."""

from __future__ import annotations

from typing import TypeVar

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

TEXT_MAX_LENGTH = 2000  # description, models, note: prose, never a payload
TITLE_MAX_LENGTH = 200

Number = TypeVar("Number", int, float)


def within(low: float, high: float) -> AfterValidator:
    """Return a validator accepting only `low <= value <= high` (NaN and infinities never)."""

    def check(value: Number) -> Number:
        if not low <= value <= high:  # False for NaN, so NaN is refused too
            raise PydanticCustomError(
                "out_of_range",
                "must be a finite number from {low} to {high}",
                {"low": _plain(low), "high": _plain(high)},
            )
        return value

    return AfterValidator(check)


def _plain(number: float) -> str:
    """Write a bound without a trailing `.0` (`30`, `0.01`)."""
    return str(int(number)) if float(number).is_integer() else str(number)
