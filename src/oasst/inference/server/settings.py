"""Inference server settings, read from the environment (prefix ``OASST_INFERENCE_``).

``redis_url`` decides the mode: unset, the queue, the message event logs and the worker registry live in
the process (embedded, one process only); set, they live in Redis and any number of server processes and
replicas can run side by side. Nothing is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oasst.inference.protocol import SamplingParameters

ANY_MODEL = "*"


def default_presets() -> dict[str, dict[str, SamplingParameters]]:
    """greedy / balanced / creative, offered for every model unless a model has presets of its own."""
    return {
        ANY_MODEL: {
            "balanced": SamplingParameters(temperature=0.7, top_p=0.95, top_k=50, repetition_penalty=1.1),
            "greedy": SamplingParameters(do_sample=False, temperature=0.0, top_k=0, repetition_penalty=1.0),
            "creative": SamplingParameters(temperature=1.0, top_p=0.98, top_k=0, repetition_penalty=1.05),
        }
    }


class Settings(BaseSettings):
    """Everything the inference server reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="OASST_INFERENCE_", env_nested_delimiter="__", extra="ignore"
    )

    environment: str = Field("development", description="development | production | test")
    database_url: str = Field("sqlite:///oasst-inference.db", description="SQLAlchemy URL")
    redis_url: str | None = Field(None, description="Redis for queue/events/registry; unset = in-process")
    redis_key_prefix: str = Field("oasst:inf:", description="Prefix of every Redis key this server uses")
    db_pool_size: int = 10
    db_max_overflow: int = 20
    user_token_secret: SecretStr | None = Field(
        None, description="Shared with the website, which mints user tokens (oasst.inference.tokens)"
    )
    root_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer tokens allowed to manage worker/API keys (comma-separated)"
    )
    key_cache_s: float = Field(
        5, ge=0, description="Seconds a verified API key is trusted without a lookup (0: look up every time)"
    )
    queue_max_size: int = Field(100, ge=1, description="Pending requests per model before 503")
    queue_retry_after_s: int = Field(10, ge=1, description="Retry-After sent with a 503 for a full queue")
    queue_wait_timeout_s: float = Field(120, gt=0, description="Longest wait in the queue before 'timeout'")
    generation_timeout_s: float = Field(300, gt=0, description="Longest generation before 'timeout'")
    heartbeat_interval_s: float = Field(10, gt=0, description="Workers must send a frame this often")
    heartbeat_timeout_s: float = Field(30, gt=0, description="A silent worker is dead after this long")
    sweep_interval_s: float = Field(2, gt=0, description="How often timeouts and dead workers are checked")
    pending_event_interval_s: float = Field(1, gt=0, description="Seconds between 'pending' SSE events")
    event_ttl_s: int = Field(900, ge=10, description="How long a message's event log stays replayable")
    cancel_on_disconnect: bool = Field(
        False, description="Stop a generation when its SSE client disconnects (default: keep generating)"
    )
    default_model: str = Field("oasst-sft", description="The model used when a request names none")
    model_presets: dict[str, dict[str, SamplingParameters]] = Field(
        default_factory=default_presets,
        description='JSON {"model" or "*": {"preset": SamplingParameters}}; "*" applies to every model',
    )
    model_presets_file: Path | None = Field(None, description="YAML or JSON file with model_presets")
    max_chat_messages: int = Field(500, ge=2, description="Messages per chat")
    max_message_length: int = Field(32000, ge=1, description="Characters per user message")
    max_drafts: int = Field(4, ge=1, le=8, description="Most alternatives generated at once")
    reply_limit: int = Field(
        20, ge=0, description="Assistant replies a user may ask for per reply_limit_interval_s (0: no limit)"
    )
    reply_limit_interval_s: int = Field(600, ge=1, description="The window of reply_limit, in seconds")

    @field_validator("root_tokens", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            if value.startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _load_presets_file(self) -> Settings:
        if self.model_presets_file is not None:
            text = self.model_presets_file.read_text(encoding="utf-8")
            if self.model_presets_file.suffix in {".yaml", ".yml"}:
                import yaml

                raw = yaml.safe_load(text) or {}
            else:
                raw = json.loads(text)
            self.model_presets = {
                model: {name: SamplingParameters.model_validate(p) for name, p in presets.items()}
                for model, presets in raw.items()
            }
        return self

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must be longer than heartbeat_interval_s")
        if self.environment == "production":
            secret = self.user_token_secret
            if secret is None or len(secret.get_secret_value()) < 32:
                raise ValueError("OASST_INFERENCE_USER_TOKEN_SECRET must be set (32+ chars) in production")
            for token in self.root_tokens:
                if len(token.get_secret_value()) < 16:
                    raise ValueError("OASST_INFERENCE_ROOT_TOKENS must hold strong tokens (16+ chars)")
        return self

    def presets_for(self, model: str) -> dict[str, SamplingParameters]:
        return self.model_presets.get(model) or self.model_presets.get(ANY_MODEL) or {}

    @property
    def configured_models(self) -> set[str]:
        return {m for m in self.model_presets if m != ANY_MODEL} | {self.default_model}


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
