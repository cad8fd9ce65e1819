"""What a model's tokens cost, in USD per million input and output tokens.

The built-in table holds list prices of a few common hosted models as published when it was
written; providers change them, so `[proposer.prices]` in autoresearch.toml (or
`price_input`/`price_output` for the model in use) overrides it. A model found nowhere costs 0,
with a note saying so, so a local model never blocks the loop and a hosted one is never
silently assumed free: the note is logged and stored with each proposal.

Model names match exactly, or as a table entry followed by a date or "-latest"
("gpt-4o-2024-08-06" is priced as "gpt-4o", "claude-3-5-haiku-20241022" as "claude-3-5-haiku"),
after dropping a router's "vendor/" prefix ("openai/gpt-4o" on OpenRouter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoresearch.proposers.config import ProposerConfig

_DATED = re.compile(r"-(\d{4}-?\d{2}-?\d{2}|latest)")

BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    # Anthropic
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    source: str  # where the price came from, or why there is none

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def _lookup(model: str, table: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    if model in table:
        return table[model]
    bare = model.split("/")[-1]  # "openai/gpt-4o" on OpenRouter
    if bare in table:
        return table[bare]
    for name in table:
        if bare.startswith(name) and _DATED.fullmatch(bare[len(name):]):
            return table[name]
    return None


def price_of(config: ProposerConfig) -> Price:
    model = config.model
    configured = _lookup(model, config.prices)
    if configured is not None:
        return Price(*configured, source="[proposer.prices]")
    if config.price_input is not None or config.price_output is not None:
        return Price(config.price_input or 0.0, config.price_output or 0.0, source="price_input/price_output")
    builtin = _lookup(model, BUILTIN_PRICES)
    if builtin is not None:
        return Price(*builtin, source="built-in table (list price; override in [proposer.prices])")
    return Price(0.0, 0.0, source=f"no price known for model {model!r}: cost counted as 0; "
                                   "set [proposer.prices] or price_input/price_output")
