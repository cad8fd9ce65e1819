"""Errors a user can act on.

Every error the harness raises on purpose derives from `AutoresearchError`. Its message is one
line that says what is wrong and how to fix it; the CLI prints it without a traceback.
"""

from __future__ import annotations


class AutoresearchError(Exception):
    """An expected failure with a message that names the fix."""


class SettingsError(AutoresearchError):
    """Bad or tampered settings (autoresearch.toml, presets, command-line values)."""


class DataError(AutoresearchError):
    """Missing, corrupt or unreachable data, or a tokenizer that does not match it."""


class WorkspaceError(AutoresearchError):
    """A workspace (git repository) that is not in the state the harness needs."""


class HandoverError(AutoresearchError):
    """The trained model could not be handed over to the evaluator (e.g. torch.export failed)."""


class ProposerError(AutoresearchError):
    """A proposer could not produce a usable change.

    `tokens` and `cost_usd` are what the failed attempt spent (LLM proposers), so that the loop
    can account for them; `description` is the change it was trying to make, when known.
    """

    def __init__(self, message: str, *, tokens: int = 0, cost_usd: float = 0.0, description: str = "") -> None:
        super().__init__(message)
        self.tokens = tokens
        self.cost_usd = cost_usd
        self.description = description


class ReportError(AutoresearchError):
    """A results folder the report or the dashboard cannot use (no results.tsv, no runs, a busy port)."""


class LedgerError(AutoresearchError):
    """A results ledger (results.tsv) that cannot be read as it is: the message names the file, the line and the fix."""


class UnknownRunError(ReportError):
    """A run id that names no run of the folder (`autoresearch logs`): the message gives the known range."""


class TrackingError(AutoresearchError):
    """An experiment tracker that cannot be used (its library missing, its store not writable)."""


class ExportError(AutoresearchError):
    """The best model cannot be exported (nothing measured, its model gone, the target folder taken)."""
