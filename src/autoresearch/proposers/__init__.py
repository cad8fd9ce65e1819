"""Proposers: who changes train.py. `search` (built-in, offline), `llm` (a chat model), `cmd` (a
coding-agent CLI). All implement `base.Proposer`; `create` makes one from its configuration."""

from __future__ import annotations

from collections.abc import Callable

from autoresearch.proposers.base import Proposer
from autoresearch.proposers.config import ProposerConfig

NAMES = ("search", "llm", "cmd")


def create(config: ProposerConfig, log: Callable[[str], None] = print) -> Proposer:
    """The proposer `config.name` names, configured."""
    if config.name == "llm":
        from autoresearch.proposers.llm import LLMProposer

        return LLMProposer(config, log=log)
    if config.name == "cmd":
        from autoresearch.proposers.cmd import CmdProposer

        return CmdProposer(config, log=log)
    from autoresearch.proposers.search import SearchProposer

    return SearchProposer(seed=config.seed)
