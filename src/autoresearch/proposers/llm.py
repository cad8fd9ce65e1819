"""`llm`: a chat model proposes each change to train.py as SEARCH/REPLACE edits.

One proposal:
1. The context (context.py) is built within the token budget and written, with the system
   prompt, to `prompt.md` in the proposal folder; it is copied into the run folder, so a person
   can read exactly what the model saw.
2. The model replies (chat.py: retries on rate limits, server errors and timeouts).
3. The reply is parsed and applied strictly (edits.py). An edit that does not apply, a syntax
   error or an edit outside train.py is sent back with the exact error, up to `edit_attempts`
   replies in all; it never becomes a run. Every reply is kept in `conversation.md`.
4. The change is written to train.py; the model's description, hypothesis and notes go into
   the Proposal and `notes.md`, with the tokens and the cost of every request it took.

After the harness has decided, `observe` appends the outcome to `notes.md`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from autoresearch.errors import ProposerError
from autoresearch.ledger import Row
from autoresearch.proposers import context
from autoresearch.proposers.base import Context, Proposal, begin_proposal
from autoresearch.proposers.chat import ChatClient, ChatError, Completion, make_client, send
from autoresearch.proposers.config import ProposerConfig, api_key
from autoresearch.proposers.edits import EditError, apply_reply, parse_reply
from autoresearch.proposers.notes import Notes
from autoresearch.proposers.pricing import Price, price_of
from autoresearch.workspace import Workspace

PROMPT_FILE = "prompt.md"
CONVERSATION_FILE = "conversation.md"

SYSTEM = """\
You are a machine-learning researcher running experiments autonomously. Each experiment is one
change to `train.py`, which trains a small language model for a fixed time budget; the harness
then measures val_bpb (validation bits per byte, lower is better) with its own evaluation and
keeps the change only if the gain is clear of the measured noise. You propose one experiment
per reply; the harness applies it, runs it and reports the result in the next prompt.

Rules (the harness enforces them):
- Change only train.py. Other files are fixed; an edit to another file is refused.
- No new packages: use only what train.py can already import.
- The run must hand over its model within the time budget plus a start-up allowance.
- Keep the hyperparameter block a flat list of `NAME = literal  # comment` lines.
- One idea per experiment, so its result says something. Do not retry what failed or was
  discarded unless you change the reason it failed. A change of SEED alone is noise, not research.

Reply in exactly this format:

Description: <one line: what you change and why; it becomes the commit message and ledger entry>
Hypothesis: <one or two sentences: what you expect to happen to val_bpb, and why>
Notes: <optional, may span lines: what to remember for later experiments (it is kept in notes.md)>

<<<<<<< SEARCH
<lines copied exactly from the current train.py, with their indentation>
=======
<the lines that replace them>
>>>>>>> REPLACE

Use as many SEARCH/REPLACE blocks as the change needs, each quoting enough lines to match
exactly one place in train.py. Blocks apply in order to the train.py shown in the prompt.
"""

TASK = """\
# Your task

Propose the next experiment: one change to train.py that you expect to lower val_bpb, in the
reply format (Description, Hypothesis, optional Notes, then SEARCH/REPLACE blocks). Here the
harness runs the commands program.md mentions for you: reply with the change only."""

FEEDBACK = """\
Your reply could not be applied, so nothing was run:

{error}

train.py is unchanged (it is the file in the first message). Reply again in the same format
(Description, Hypothesis, Notes, SEARCH/REPLACE blocks) with edits that apply to it."""


@dataclass
class Spend:
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    estimated: bool = False

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class LLMProposer:
    config: ProposerConfig
    client: ChatClient | None = None  # made from the config when None
    log: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    name: str = field(default="llm", init=False)
    _secret: str = field(default="", init=False, repr=False)
    _counter: context.TokenCounter | None = field(default=None, init=False, repr=False)
    _ws: Workspace | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.client is None:
            self._secret = api_key(self.config)
            self.client = make_client(self.config, self._secret)
        self.price: Price = price_of(self.config)
        if self.price.input_per_mtok == 0 and self.price.output_per_mtok == 0 and self.price.source.startswith("no price"):
            self.log(f"note: {self.price.source}")

    # --- one proposal ---------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        assert self.client is not None
        self._ws = ctx.ws
        folder = begin_proposal(ctx.ws)
        notes = Notes(ctx.ws.notes_path)
        if self._counter is None:
            self._counter = context.token_counter(self.config.token_encoding, ctx.settings)
        reserved = self._counter.count(SYSTEM) + self._counter.count(TASK) + 4
        prompt = context.build(ctx, notes.read(), self._counter, self.config.context_tokens, reserved=reserved)
        user = f"{prompt.text}\n\n{TASK}"
        (folder / PROMPT_FILE).write_text(self._prompt_record(prompt, user), encoding="utf-8")
        messages = [{"role": "user", "content": user}]
        spend, conversation, description, error = Spend(), [], "", ""
        for attempt in range(1, self.config.edit_attempts + 1):
            completion = self._request(messages, spend, description)
            conversation.append(f"## Reply {attempt} ({completion.input_tokens} input + {completion.output_tokens} "
                                 f"output tokens)\n\n{completion.text}\n")
            try:
                reply = parse_reply(completion.text)
                description = reply.description
                new_source = apply_reply(reply, ctx.best_source)
            except EditError as e:
                error = str(e)
                if completion.truncated:
                    error = (f"your reply was cut off at {self.config.max_output_tokens} output tokens; send a "
                             f"shorter reply (only the SEARCH/REPLACE blocks the change needs). {error}")
                conversation.append(f"## Not applied\n\n{error}\n")
                (folder / CONVERSATION_FILE).write_text("\n".join(conversation), encoding="utf-8")
                self.log(f"  llm reply {attempt}/{self.config.edit_attempts} not applied: {error.splitlines()[0]}")
                messages += [{"role": "assistant", "content": completion.text},
                             {"role": "user", "content": FEEDBACK.format(error=error)}]
                continue
            conversation.append("## Applied\n")
            (folder / CONVERSATION_FILE).write_text("\n".join(conversation), encoding="utf-8")
            ctx.ws.train_py.write_text(new_source, encoding="utf-8")
            notes.record_proposal(self.name, reply.description, reply.hypothesis, reply.notes)
            return Proposal(
                description=reply.description,
                hypothesis=reply.hypothesis,
                params=self._params(spend, attempt, prompt),
                tokens=spend.tokens,
                cost_usd=self._cost(spend),
            )
        notes.record_failure(self.name, description, error)
        raise ProposerError(
            f"no applicable edit after {self.config.edit_attempts} replies (edit_attempts); last error: "
            f"{error.splitlines()[0] if error else '-'}",
            tokens=spend.tokens, cost_usd=self._cost(spend), description=description)

    def _request(self, messages: list[dict[str, str]], spend: Spend, description: str) -> Completion:
        assert self.client is not None
        try:
            completion = send(self.client, SYSTEM, messages, self.config, self._secret, self.log, self.sleep)
        except ChatError as e:  # carry what the proposal spent so far
            raise ChatError(str(e), tokens=spend.tokens, cost_usd=self._cost(spend), description=description) from None
        spend.requests += 1
        if completion.usage_reported:
            spend.input_tokens += completion.input_tokens
            spend.output_tokens += completion.output_tokens
        else:  # some local servers report no usage: estimate it
            assert self._counter is not None
            spend.estimated = True
            spend.input_tokens += sum(self._counter.count(m["content"]) for m in messages) + self._counter.count(SYSTEM)
            spend.output_tokens += self._counter.count(completion.text)
        return completion

    def _cost(self, spend: Spend) -> float:
        return round(self.price.cost(spend.input_tokens, spend.output_tokens), 6)

    def _params(self, spend: Spend, attempts: int, prompt: context.Prompt) -> dict:
        assert self.client is not None
        params = {
            "provider": self.client.provider, "model": self.client.model, "endpoint": self.client.endpoint,
            "replies": attempts, "requests": spend.requests,
            "input_tokens": spend.input_tokens, "output_tokens": spend.output_tokens,
            "price": f"{self.price.input_per_mtok:g}/{self.price.output_per_mtok:g} USD per M tokens ({self.price.source})",
            "prompt_tokens_counted": prompt.tokens,
        }
        if spend.estimated:
            params["usage"] = "estimated (the endpoint reported none)"
        if prompt.shortened:
            params["context_shortened"] = list(prompt.shortened)
        return params

    def _prompt_record(self, prompt: context.Prompt, user: str) -> str:
        assert self.client is not None
        shortened = ", ".join(prompt.shortened) or "nothing"
        return (f"<!-- what the model saw: {self.client.provider} {self.client.model} at {self.client.endpoint}; "
                f"about {prompt.tokens} tokens by {prompt.counter} (budget {self.config.context_tokens}); "
                f"shortened to fit: {shortened} -->\n\n"
                f"# System prompt\n\n{SYSTEM}\n# User message\n\n{user}\n")

    # --- learning from the outcome --------------------------------------------------------------

    def observe(self, proposal: Proposal, rows: list[Row]) -> None:
        if self._ws is None or not rows:
            return
        Notes(self._ws.notes_path).record_outcome(proposal.description, outcome_text(rows))


def outcome_text(rows: list[Row]) -> str:
    """The harness's verdict on a proposal, in one line."""
    first = rows[0]
    values = [r.val_bpb for r in rows if r.val_bpb is not None]
    parts = [first.status]
    if values:
        parts.append(f"val_bpb {sum(values) / len(values):.6f}" + (f" over {len(values)} runs" if len(values) > 1 else ""))
    gains = [r.gain for r in rows if r.gain is not None]
    if gains:  # against the same best, so the mean gain is the gain of the mean
        parts.append(f"gain {sum(gains) / len(gains):+.4f}")
    if first.why:
        parts.append(f"({first.why})")
    return " ".join(parts)
