"""Website settings, read from the environment (prefix ``OASST_WEB_``, nested with ``__``).

Example: ``OASST_WEB_OAUTH__DISCORD_CLIENT_ID=...``. Nothing is read at import time: call
:func:`load_web_settings`, or build :class:`WebSettings` directly (tests, ``oasst up``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_SECRET = "dev-secret-change-me"


class SmtpSettings(BaseModel):
    """Where magic-link mails go. Without a host, links are printed to the server console instead."""

    host: str | None = Field(None, description="SMTP server; unset = print links to the console.")
    port: int = Field(587, description="SMTP port (465 = implicit TLS).")
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = Field(True, description="Upgrade the connection with STARTTLS (ports other than 465).")
    sender: str = Field("oasst <noreply@localhost>", description="The From: header of sign-in mails.")


class OAuthSettings(BaseModel):
    """OAuth providers; each is offered on the sign-in page only when its id and secret are set."""

    discord_client_id: str | None = None
    discord_client_secret: SecretStr | None = None
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OASST_WEB_", env_nested_delimiter="__", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "production", description="development allows the default secret and plain-http cookies."
    )
    base_url: str = Field("http://127.0.0.1:8080", description="Public root URL (magic links, OAuth).")
    secret_key: SecretStr = Field(SecretStr(DEV_SECRET), description="Signs session cookies and tokens.")
    database_url: str = Field("sqlite:///oasst-web.db", description="The website's own account store.")
    backend_url: str = Field("http://127.0.0.1:8080", description="Root of the backend API.")
    backend_api_key: SecretStr = Field(SecretStr(""), description="The website's trusted backend API key.")
    dev_login: bool = Field(False, description="Offer a development login with a chosen role. Never in prod.")
    email_login: bool = Field(True, description="Offer sign-in by emailed magic link.")
    magic_link_minutes: int = Field(15, ge=1, description="How long a sign-in link stays valid.")
    session_days: int = Field(30, ge=1, description="How long a sign-in lasts.")
    languages: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["en", "de", "es", "ar"],
        description="Task/UI languages offered (comma-separated in the environment).",
    )
    default_lang: str = "en"
    tos_version: int = Field(1, ge=1, description="Bump to ask everybody to accept the terms again.")
    admin_emails: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Emails that become admins when they first sign in."
    )
    smtp: SmtpSettings = Field(default_factory=lambda: SmtpSettings())
    oauth: OAuthSettings = Field(default_factory=lambda: OAuthSettings())
    inference_url: str | None = Field(None, description="Root of the inference server; unset = chat is off.")
    inference_user_token_secret: SecretStr = Field(
        SecretStr(""),
        description="Shared with the inference server (its user_token_secret); signs chat users.",
    )

    @field_validator("languages", "admin_emails", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> WebSettings:
        if self.environment == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError(
                "OASST_WEB_SECRET_KEY is the development default; set a long random secret in production"
            )
        if self.environment == "production" and self.dev_login:
            raise ValueError("OASST_WEB_DEV_LOGIN must stay off in production")
        if self.default_lang not in self.languages:
            raise ValueError(f"default_lang {self.default_lang!r} is not one of languages {self.languages}")
        return self

    @model_validator(mode="after")
    def _chat_needs_secret(self) -> WebSettings:
        if self.inference_url and not self.inference_user_token_secret.get_secret_value():
            raise ValueError(
                "OASST_WEB_INFERENCE_USER_TOKEN_SECRET must be set when OASST_WEB_INFERENCE_URL is"
            )
        return self

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")


def load_web_settings(**overrides: object) -> WebSettings:
    return WebSettings(**overrides)  # type: ignore[arg-type]
