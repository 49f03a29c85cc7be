"""Backend settings, read from the environment (prefix ``OASST_``, nested with ``__``).

Example: ``OASST_TREE_MANAGER__GOAL_TREE_SIZE=5`` sets ``settings.tree_manager.goal_tree_size``.
Nothing is read at import time: call :func:`load_settings` (or build :class:`Settings` directly in tests).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_LABELS_PROMPT = [
    "spam",
    "lang_mismatch",
    "quality",
    "creativity",
    "humor",
    "toxicity",
    "violence",
    "not_appropriate",
    "pii",
    "hate_speech",
    "sexual_content",
]
DEFAULT_LABELS_ASSISTANT = [*DEFAULT_LABELS_PROMPT, "fails_task", "helpfulness"]


class TreeManagerConfiguration(BaseModel):
    """Every knob of the tree lifecycle and the task dispenser, with the original's defaults.

    A snapshot of ``max_tree_depth``, ``max_children_count`` and ``goal_tree_size`` is stored on each tree
    when it is created, so changing these later affects only new trees.
    """

    max_active_trees: int = Field(
        10, ge=0, description="Max growing trees per language (the lottery fills up to this)."
    )
    max_initial_prompt_review: int = Field(
        100, ge=0, description="Prompts in review per language before initial_prompt tasks stop."
    )
    max_tree_depth: int = Field(
        3, ge=1, description="A parent must have depth < max_tree_depth (root depth 0)."
    )
    max_children_count: int = Field(3, ge=1, description="Max replies per message.")
    num_prompter_replies: int = Field(1, ge=1, description="Max prompter replies under an assistant message.")
    goal_tree_size: int = Field(
        12, ge=1, description="Accepted messages (root included) needed before ranking."
    )
    random_goal_tree_size: bool = Field(
        False, description="Draw each tree's goal size from [min_goal_tree_size, goal_tree_size]."
    )
    min_goal_tree_size: int = Field(5, ge=1, description="Lower bound of the random goal size.")
    num_reviews_initial_prompt: int = Field(3, ge=1, description="Label reviews needed per initial prompt.")
    num_reviews_reply: int = Field(3, ge=1, description="Label reviews needed per reply.")
    auto_mod_enabled: bool = Field(True, description="Run auto-moderation on task and availability requests.")
    auto_mod_max_skip_reply: int = Field(
        25, ge=1, description="At least this many reply skips on a message halts its tree."
    )
    auto_mod_red_flags: int = Field(
        4, ge=1, description="At least this many red flags: root -> aborted_low_grade, reply -> deleted."
    )
    p_full_labeling_review_prompt: float = Field(
        1.0, ge=0, le=1, description="Probability a prompt label task is 'full'."
    )
    p_full_labeling_review_reply_assistant: float = Field(
        1.0, ge=0, le=1, description="Same, for assistant replies."
    )
    p_full_labeling_review_reply_prompter: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Same, for prompter replies (honoured; the original overwrote it with 0.1).",
    )
    acceptance_threshold_initial_prompt: float = Field(
        0.6, ge=0, le=1, description="Acceptance must be strictly above this."
    )
    acceptance_threshold_reply: float = Field(
        0.6, ge=0, le=1, description="Acceptance must be strictly above this."
    )
    num_required_rankings: int = Field(3, ge=1, description="Completed rankings per parent before scoring.")
    p_activate_backlog_tree: float = Field(
        0.1, ge=0, le=1, description="Chance to activate a backlog tree when an active tree ends."
    )
    min_active_rankings_per_lang: int = Field(
        0, ge=0, description="Keep at least this many incomplete rankings per language from the backlog."
    )
    labels_initial_prompt: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS_PROMPT))
    labels_assistant_reply: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS_ASSISTANT))
    labels_prompter_reply: list[str] = Field(default_factory=lambda: list(DEFAULT_LABELS_PROMPT))
    mandatory_labels_initial_prompt: list[str] = Field(default_factory=lambda: ["spam"])
    mandatory_labels_assistant_reply: list[str] = Field(default_factory=lambda: ["spam"])
    mandatory_labels_prompter_reply: list[str] = Field(default_factory=lambda: ["spam"])
    rank_prompter_replies: bool = Field(False, description="Also rank prompter siblings.")
    lonely_children_count: int = Field(
        2, ge=0, description="Parents with fewer children than this are preferred."
    )
    p_lonely_child_extension: float = Field(
        0.75, ge=0, le=1, description="Chance to pick among lonely prompter parents."
    )
    recent_tasks_span_sec: int = Field(
        300, ge=0, description="Window for the pending-task cap and the soft lock on parents."
    )
    max_pending_tasks_per_user: int = Field(
        8, ge=1, description="Open tasks within the window before TASK_TOO_MANY_PENDING."
    )
    max_prompt_lottery_waiting: int = Field(
        250, ge=0, description="Per language; beyond this no initial_prompt tasks are offered."
    )
    init_prompt_disabled_langs: str = Field(
        "", description="Comma-separated languages without initial_prompt tasks."
    )

    @property
    def init_prompt_disabled_langs_list(self) -> list[str]:
        return [lang.strip() for lang in self.init_prompt_disabled_langs.split(",") if lang.strip()]

    @model_validator(mode="after")
    def _check_goal_range(self) -> TreeManagerConfiguration:
        if self.random_goal_tree_size and self.min_goal_tree_size > self.goal_tree_size:
            raise ValueError("min_goal_tree_size must not exceed goal_tree_size")
        return self


class RateLimits(BaseModel):
    """Limits on ``POST /tasks/`` (the original's defaults)."""

    enabled: bool = True
    user_requests: int = 30
    user_interval_sec: int = 240
    client_requests: int = 10_000
    client_interval_sec: int = 60
    assistant_reply_requests: int = 4
    assistant_reply_interval_sec: int = 120
    prompter_reply_requests: int = 8
    prompter_reply_interval_sec: int = 120


class StatsIntervals(BaseModel):
    """Minutes between leaderboard recomputes per time frame, and for cached stats."""

    day: int = 5
    week: int = 15
    month: int = 60
    total: int = 240
    cached_stats: int = 60
    enabled: bool = True


class Settings(BaseSettings):
    """Everything the backend reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="OASST_", env_nested_delimiter="__", extra="ignore")

    environment: str = Field("development", description="development | production | test")
    database_url: str = Field(
        "sqlite:///oasst.db", description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...)"
    )
    redis_url: str | None = Field(None, description="Redis for rate limits; in-memory when unset")
    db_pool_size: int = 20
    db_max_overflow: int = 20
    db_max_tx_retries: int = 5
    request_threads: int = Field(8, ge=1, description="Threads per process that run requests' database work")
    root_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer tokens allowed to mint API keys (comma-separated)"
    )
    official_web_api_key: SecretStr | None = Field(None, description="Create this trusted API key on startup")
    message_size_limit: int = 2000
    task_validity_minutes: int = 2880
    duplicate_message_filter_window_minutes: int = 120
    enforce_tos_acceptance: bool = Field(
        True, description="HTTP 451 for task calls of users who did not accept the ToS"
    )
    allow_self_labeling: bool = False
    allow_self_ranking: bool = False
    prompt_lottery_interval_sec: float = Field(
        0.2,
        ge=0,
        description="Run the prompt lottery at most this often per language and process (0: every request)",
    )
    run_scheduler: bool = Field(True, description="Recompute leaderboards and clean up in the background")
    tree_manager: TreeManagerConfiguration = Field(default_factory=TreeManagerConfiguration)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    stats_intervals: StatsIntervals = Field(default_factory=StatsIntervals)

    @field_validator("root_tokens", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            if value.startswith("["):
                import json

                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            weak = {"1234", "changeme", ""}
            for token in self.root_tokens:
                if token.get_secret_value() in weak or len(token.get_secret_value()) < 16:
                    raise ValueError("OASST_ROOT_TOKENS must hold strong tokens (16+ chars) in production")
            key = self.official_web_api_key
            if key is not None and (key.get_secret_value() in weak or len(key.get_secret_value()) < 16):
                raise ValueError("OASST_OFFICIAL_WEB_API_KEY must be strong (16+ chars) in production")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
