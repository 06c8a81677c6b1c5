"""Which currency a site's revenue is in, and what an order in another currency is worth in it.

Money in different currencies is never added together: an order in the site's currency (or
in one ``[site] exchange_rates`` converts) counts in the revenue; any other is counted apart,
per currency (`edge_agent.core.aggregate.Cell.other_revenue`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_CODE = re.compile(r"[A-Z]{3}")
_RATE = re.compile(r"\s*([A-Z]{3})\s*=\s*([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*")


@dataclass(frozen=True, slots=True)
class Money:
    """The site's currency ("" when not said) and its exchange rates.

    Attributes:
        currency: the revenue's currency. Empty: each hour's revenue is in the currency of its
            first order, and orders in any other currency are counted apart.
        rates: currency -> how many units of ``currency`` one unit of it is worth.
    """

    currency: str = ""
    rates: Mapping[str, float] = field(default_factory=dict)

    def priced(self, total: float, currency: str, hour_currency: str) -> float | None:
        """``total`` in ``hour_currency`` (the currency the hour's revenue is in), or None when
        no configured rate converts ``currency`` into it."""
        if currency == hour_currency:
            return total
        rate = self.rates.get(currency) if hour_currency == self.currency else None
        return None if rate is None else total * rate


#: A site that has not said its currency and converts nothing.
UNSAID = Money()


def parse_rates(text: str) -> dict[str, float]:
    """``"EUR=11.2, USD=31.6"`` as ``{"EUR": 11.2, "USD": 31.6}``.

    Raises:
        ValueError: an entry is not ``CODE=rate`` with a three-letter code and a positive rate,
            or a code is given twice.
    """
    rates: dict[str, float] = {}
    for entry in filter(str.strip, re.split(r"[,\s]+(?=[A-Z]{3}\s*=)|,", text)):
        found = _RATE.fullmatch(entry)
        if found is None:
            raise ValueError(f"{entry.strip()!r} is not CODE=rate, such as EUR=11.2")
        code, rate = found.group(1), float(found.group(2))
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"{code}: the rate {found.group(2)} is not a positive number")
        if code in rates:
            raise ValueError(f"{code} is given twice")
        rates[code] = rate
    return rates


def is_code(value: str) -> bool:
    """Whether ``value`` is written as an ISO 4217 code (three capital letters)."""
    return _CODE.fullmatch(value) is not None
