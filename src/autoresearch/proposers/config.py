"""How the proposers are configured: the `[proposer]` section of autoresearch.toml and the flags
of `autoresearch loop`, flags winning.

The section is not part of the frozen settings: `settings_sha256` and the result fingerprint
cover only what defines a measurement ([research], [data], [runner], [decision]), so changing the
model or the agent never makes results incomparable. API keys are never read from a file: the
section names the environment variable that holds the key (`api_key_env`), and a key found in
the file is refused.

    [proposer]
    name = "llm"                      # search | llm | cmd
    provider = "openai"               # llm: openai (any OpenAI-compatible endpoint) | anthropic
    model = "gpt-4.1"
    base_url = "http://127.0.0.1:8000/v1"   # vLLM, Ollama, llama.cpp, OpenRouter...; empty = the provider's
    api_key_env = "OPENAI_API_KEY"
    agent = "claude"                  # cmd: claude | codex | aider | gemini | opencode
    command = ""                      # cmd: a custom command template instead of a preset
    [proposer.prices]                 # USD per million tokens: [input, output]
    "my-local-model" = [0.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from autoresearch.errors import SettingsError
from autoresearch.settings import SETTINGS_FILE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SECTION = "proposer"
PROVIDERS = ("openai", "anthropic")
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
LOCAL_KEY = "not-needed"  # sent to a custom endpoint when no key is configured (local servers ignore it)


@dataclass(frozen=True)
class ProposerConfig:
    name: str = "search"  # search | llm | cmd
    seed: int = 0  # search: the sampler's seed

    # llm: the endpoint
    provider: str = "openai"  # openai (and every OpenAI-compatible server) | anthropic
    model: str = ""
    base_url: str = ""  # empty: the provider's own API
    api_key_env: str = ""  # empty: OPENAI_API_KEY / ANTHROPIC_API_KEY
    temperature: float | None = None  # None: the model's default
    max_output_tokens: int = 8192
    request_timeout: float = 300.0  # seconds one request may take
    max_retries: int = 4  # after a rate limit, a server error, a timeout or a lost connection
    retry_delay: float = 2.0  # seconds before the first retry; doubled each time (Retry-After wins)
    edit_attempts: int = 3  # replies per proposal: the first and the corrections of a failed edit

    # llm and cmd: what the model sees
    context_tokens: int = 32000  # budget of the prompt
    token_encoding: str = "workspace"  # tiktoken encoding that counts tokens; "workspace": this workspace's BPE

    # llm: what tokens cost (USD per million); the table wins, then these, then the built-in table
    price_input: float | None = None
    price_output: float | None = None
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)

    # cmd: the coding agent
    agent: str = ""  # claude | codex | aider | gemini | opencode
    command: str = ""  # custom command template; wins over `agent`
    agent_timeout: float = 1800.0  # seconds before the agent's whole process group is killed
    agent_idle_timeout: float = 300.0  # no new output nor file change this long ends it (0: never)
    agent_context_tokens: int = 6000  # budget of the agent's prompt (it reads the files itself)

    # caps for one `autoresearch loop`
    max_cost: float | None = None  # USD
    max_tokens: int | None = None

    def key_env(self) -> str:
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.provider, "")

    def replace(self, **overrides: Any) -> ProposerConfig:
        """A copy with the given values (None: keep), validated."""
        values = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(values) - {f.name for f in fields(self)}
        if unknown:
            raise SettingsError(f"unknown proposer setting(s) {sorted(unknown)}; known: {', '.join(f.name for f in fields(self))}")
        config = dataclasses.replace(self, **values)
        validate(config)
        return config


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: str(f.type) for f in fields(ProposerConfig)}
    kind = kinds[name]
    try:
        if name == "prices":
            if not isinstance(value, dict):
                raise ValueError
            prices = {}
            for model, pair in value.items():
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise SettingsError(f"[{SECTION}.prices] {model!r} must be [input, output] USD per million "
                                        f"tokens, got {pair!r}")
                prices[str(model)] = (float(pair[0]), float(pair[1]))
            return prices
        if value is None:
            return None
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError, IndexError):
        raise SettingsError(f"[{SECTION}] {name} must be {kind}, got {value!r}") from None


def validate(c: ProposerConfig) -> None:
    if c.name not in ("search", "llm", "cmd"):
        raise SettingsError(f"unknown proposer {c.name!r}; available: search, llm, cmd")
    if c.provider not in PROVIDERS:
        raise SettingsError(f"unknown provider {c.provider!r}; choose openai (any OpenAI-compatible endpoint) or anthropic")
    positive = ("max_output_tokens", "request_timeout", "edit_attempts", "context_tokens", "agent_timeout",
                "agent_context_tokens")
    for name in positive:
        if getattr(c, name) <= 0:
            raise SettingsError(f"[{SECTION}] {name} must be positive, got {getattr(c, name)}")
    if c.max_retries < 0 or c.retry_delay < 0:
        raise SettingsError(f"[{SECTION}] max_retries and retry_delay must not be negative")
    for name in ("max_cost", "max_tokens", "price_input", "price_output", "agent_idle_timeout"):
        value = getattr(c, name)
        if value is not None and value < 0:
            raise SettingsError(f"[{SECTION}] {name} must not be negative, got {value}")


def from_table(table: dict[str, Any], source: str = SETTINGS_FILE) -> ProposerConfig:
    known = {f.name for f in fields(ProposerConfig)}
    secrets = [k for k in table if "key" in k.lower() and k != "api_key_env"]
    if secrets:
        raise SettingsError(
            f"{source}: [{SECTION}] holds {', '.join(sorted(secrets))}: API keys are never stored in files. Remove it, "
            f"export the key in an environment variable and name that variable with api_key_env")
    unknown = set(table) - known
    if unknown:
        raise SettingsError(f"{source}: unknown key(s) {sorted(unknown)} in [{SECTION}]; known: {', '.join(sorted(known))}")
    config = ProposerConfig(**{k: _coerce(k, v) for k, v in table.items()})
    validate(config)
    return config


def load(workspace: Path) -> ProposerConfig:
    """The `[proposer]` section of the workspace's autoresearch.toml (defaults when there is none)."""
    path = Path(workspace) / SETTINGS_FILE
    if not path.exists():
        return ProposerConfig()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path} is not valid TOML ({e})") from None
    return from_table(doc.get(SECTION, {}), str(path))


def api_key(config: ProposerConfig) -> str:
    """The API key from the environment variable the config names; never logged or stored."""
    name = config.key_env()
    value = os.environ.get(name, "") if name else ""
    if value:
        return value
    if config.base_url and not config.api_key_env:
        return LOCAL_KEY  # a local server (vLLM, Ollama, llama.cpp) usually needs none
    raise SettingsError(
        f"no API key: the environment variable {name or '(none named)'} is not set. Export it "
        f"(`export {name or 'MY_KEY'}=...`), or name another variable with --api-key-env / [{SECTION}] api_key_env")


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` (and its longer prefixes) masked."""
    if not secret or secret == LOCAL_KEY:
        return text
    out = text.replace(secret, "***")
    if len(secret) >= 12:  # servers echo keys partly, e.g. "sk-abc...wxyz"
        out = out.replace(secret[:8], "***")
    return out
