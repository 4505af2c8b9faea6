"""What a run's tokens cost: one dated, editable price table per model.

Prices are USD per million tokens, from Anthropic's pricing page
(platform.claude.com/docs/en/about-claude/pricing) as stored for this project on the
date below; edit the table when they change.  A model id resolves to the longest key it
starts with, followed by the end or a ``-`` (so a dated id such as
``claude-haiku-4-5-20251001`` gets ``claude-haiku-4-5``'s prices).  A model the table
does not know costs ``None``: unknown, never zero.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2026-12-04"


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    output: float


PRICES: dict[str, Prices] = {
    "claude-opus-4-5": Prices(5.00, 6.25, 10.00, 0.50, 25.00),
    "claude-opus-4-1": Prices(15.00, 18.75, 30.00, 1.50, 75.00),
    "claude-sonnet-4-5": Prices(3.00, 3.75, 6.00, 0.30, 15.00),
    "claude-sonnet-4": Prices(3.00, 3.75, 6.00, 0.30, 15.00),
    "claude-haiku-4-5": Prices(1.00, 1.25, 2.00, 0.10, 5.00),
    "claude-3-5-haiku": Prices(0.80, 1.00, 1.60, 0.08, 4.00),
}


def prices_for(model: str) -> Prices | None:
    matches = [key for key in PRICES if model == key or model.startswith(key + "-")]
    return PRICES[max(matches, key=len)] if matches else None


def cost_usd(model: str, *, input_tokens: int, output_tokens: int,
             cache_write_5m_tokens: int = 0, cache_write_1h_tokens: int = 0,
             cache_read_tokens: int = 0) -> float | None:
    """The cost of these tokens on ``model`` (None when its prices are unknown)."""
    p = prices_for(model)
    if p is None:
        return None
    total = (input_tokens * p.input + output_tokens * p.output
             + cache_write_5m_tokens * p.cache_write_5m
             + cache_write_1h_tokens * p.cache_write_1h + cache_read_tokens * p.cache_read)
    return round(total / 1e6, 6)
