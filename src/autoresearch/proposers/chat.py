"""Talking to a chat model: OpenAI-compatible chat completions or Anthropic messages, through the
official client libraries, with the harness's own retry policy.

- `openai`: the `openai` client against the provider's API or any compatible server named by a
  base URL (vLLM, Ollama, llama.cpp server, OpenRouter, LiteLLM...).
- `anthropic`: the `anthropic` client.

The libraries' own retries are switched off; `send` retries rate limits (429), server errors
(5xx, 529), timeouts and lost connections `max_retries` times with exponential backoff from
`retry_delay` (a Retry-After header from the server wins, up to MAX_DELAY), and turns every
other failure into a `ChatError` that says what to check. Each request has a time limit, so a
dead or hung endpoint ends in an error, never a hang. The API key is masked in every message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from autoresearch.errors import ProposerError, SettingsError
from autoresearch.proposers.config import ProposerConfig, redact

MAX_DELAY = 120.0  # seconds: the longest wait between two attempts


class ChatError(ProposerError):
    """The chat endpoint failed (after the retries the policy allows)."""


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool = False  # the reply hit max_output_tokens
    usage_reported: bool = True


class ChatClient(Protocol):
    provider: str
    model: str
    endpoint: str

    def complete(self, system: str, messages: list[dict[str, str]]) -> Completion:
        """One request (no retries): the reply to `messages` after the `system` prompt."""
        ...


@dataclass(frozen=True)
class Failure:
    retryable: bool
    what: str  # in words, for the log and the error
    wait: float | None = None  # seconds the server asked to wait


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: use our own backoff
    return None


def classify(error: Exception, timeout: float) -> Failure:
    """What went wrong with a request, from the exception either client library raised."""
    status = getattr(error, "status_code", None)
    name = type(error).__name__
    if status is None:
        if "Timeout" in name:
            return Failure(True, f"no answer within {timeout:g} s (request timeout)")
        if "Connection" in name:
            return Failure(True, f"connection failed ({error})")
        return Failure(False, f"{name}: {error}")
    wait = _retry_after(getattr(error, "response", None))
    message = str(getattr(error, "message", "") or error)
    if status == 429:
        return Failure(True, f"rate limited (HTTP 429: {message})", wait)
    if status in (408, 409) or status >= 500:
        return Failure(True, f"server error (HTTP {status}: {message})", wait)
    hints = {
        400: "the request was refused; check the model name and max_output_tokens",
        401: "the API key was refused; check the key in the environment variable",
        403: "the API key may not use this model",
        404: "no such model or URL; check --model and --base-url",
        413: "the prompt is too large; lower context_tokens",
    }
    hint = hints.get(status, "")
    return Failure(False, f"HTTP {status}: {message}" + (f" ({hint})" if hint else ""))


def send(client: ChatClient, system: str, messages: list[dict[str, str]], config: ProposerConfig, secret: str,
         log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> Completion:
    """One completion, retrying what is worth retrying; a `ChatError` when it cannot be had."""
    attempts = config.max_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return client.complete(system, messages)
        except ProposerError:
            raise
        except Exception as e:  # the client libraries' errors; classified below
            failure = classify(e, config.request_timeout)
        what = redact(failure.what, secret)
        where = f"{client.provider} endpoint {client.endpoint} (model {client.model})"
        if not failure.retryable:
            raise ChatError(f"{where}: {what}") from None
        if attempt == attempts:
            raise ChatError(f"{where} failed {attempts} time(s), last: {what}; is the server up and the model "
                            "available? (retries: max_retries, time limit per request: request_timeout)") from None
        delay = min(MAX_DELAY, config.retry_delay * 2 ** (attempt - 1))
        if failure.wait is not None:
            delay = min(MAX_DELAY, max(delay, failure.wait))
        log(f"  {where}: {what}; retry {attempt}/{config.max_retries} in {delay:.1f} s")
        sleep(delay)
    raise AssertionError("unreachable")


# --- the two client libraries --------------------------------------------------------------


def _missing(package: str) -> SettingsError:
    return SettingsError(f"the {package!r} client library is not installed: pip install 'autoresearch[llm]'")


class OpenAIChat:
    provider = "openai"

    def __init__(self, config: ProposerConfig, api_key: str) -> None:
        try:
            import openai
        except ImportError:
            raise _missing("openai") from None
        self.config = config
        self.model = config.model
        self.endpoint = config.base_url or "https://api.openai.com/v1"
        self._client = openai.OpenAI(api_key=api_key, base_url=config.base_url or None,
                                     timeout=config.request_timeout, max_retries=0)

    def complete(self, system: str, messages: list[dict[str, str]]) -> Completion:
        kwargs: dict[str, Any] = {"model": self.model, "messages": [{"role": "system", "content": system}, *messages]}
        if self.config.base_url:  # compatible servers know the classic parameter
            kwargs["max_tokens"] = self.config.max_output_tokens
        else:  # OpenAI's own API wants this one (its reasoning models refuse max_tokens)
            kwargs["max_completion_tokens"] = self.config.max_output_tokens
        if self.config.temperature is not None:
            kwargs["temperature"] = self.config.temperature
        response = self._client.chat.completions.create(**kwargs)
        if not response.choices:
            raise ChatError(f"openai endpoint {self.endpoint} returned no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            truncated=choice.finish_reason == "length",
            usage_reported=usage is not None,
        )


class AnthropicChat:
    provider = "anthropic"

    def __init__(self, config: ProposerConfig, api_key: str) -> None:
        try:
            import anthropic
        except ImportError:
            raise _missing("anthropic") from None
        self.config = config
        self.model = config.model
        self.endpoint = config.base_url or "https://api.anthropic.com"
        self._client = anthropic.Anthropic(api_key=api_key, base_url=config.base_url or None,
                                           timeout=config.request_timeout, max_retries=0)

    def complete(self, system: str, messages: list[dict[str, str]]) -> Completion:
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": self.config.max_output_tokens,
                                  "system": system, "messages": messages}
        if self.config.temperature is not None:
            kwargs["temperature"] = self.config.temperature
        response = self._client.messages.create(**kwargs)
        text = "".join(getattr(block, "text", "") for block in response.content if getattr(block, "type", "") == "text")
        usage = response.usage
        return Completion(
            text=text,
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            truncated=response.stop_reason == "max_tokens",
            usage_reported=usage is not None,
        )


def make_client(config: ProposerConfig, api_key: str) -> ChatClient:
    if not config.model:
        raise SettingsError("the llm proposer needs a model: --model NAME (or model = \"...\" in [proposer])")
    return AnthropicChat(config, api_key) if config.provider == "anthropic" else OpenAIChat(config, api_key)
