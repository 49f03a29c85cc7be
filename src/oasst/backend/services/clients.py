"""API clients (keys) and end users, namespaced per client."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from oasst.backend.cache import TtlCache
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient, User, utcnow
from oasst.protocol.common import User as WireUser


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_api_client(
    session: Session,
    *,
    description: str,
    trusted: bool = False,
    frontend_type: str | None = None,
    admin_email: str | None = None,
    api_key: str | None = None,
) -> tuple[ApiClient, str]:
    """Create a client and return it with its key (the key is shown once; only its hash is stored)."""
    key = api_key or secrets.token_urlsafe(32)
    client = ApiClient(
        id=uuid.uuid4(),
        api_key_hash=hash_api_key(key),
        description=description,
        trusted=trusted,
        frontend_type=frontend_type,
        admin_email=admin_email,
    )
    session.add(client)
    session.flush()
    return client, key


def ensure_api_client(session: Session, *, api_key: str, description: str, trusted: bool) -> ApiClient:
    """Create the client for ``api_key`` unless it exists (used for the official web key at startup)."""
    existing = find_api_client(session, api_key)
    if existing is not None:
        return existing
    client, _ = create_api_client(session, description=description, trusted=trusted, api_key=api_key)
    return client


def find_api_client(session: Session, api_key: str) -> ApiClient | None:
    return session.scalars(select(ApiClient).where(ApiClient.api_key_hash == hash_api_key(api_key))).first()


def authorize_api_client(session: Session, api_key: str | None) -> ApiClient:
    client = find_api_client(session, api_key) if api_key else None
    if client is None or not client.enabled:
        raise OasstError(
            "Missing or invalid API key: send it in the X-API-Key header.",
            ErrorCode.API_CLIENT_NOT_AUTHORIZED,
            HTTPStatus.FORBIDDEN,
        )
    return client


def require_trusted(client: ApiClient) -> ApiClient:
    if not client.trusted:
        raise OasstError(
            "This endpoint needs a trusted API key.",
            ErrorCode.API_CLIENT_NOT_AUTHORIZED,
            HTTPStatus.FORBIDDEN,
        )
    return client


def find_user(session: Session, client: ApiClient, *, username: str, auth_method: str) -> User | None:
    return session.scalars(
        select(User).where(
            User.api_client_id == client.id, User.username == username, User.auth_method == auth_method
        )
    ).first()


def get_or_create_user(session: Session, client: ApiClient, wire_user: WireUser) -> User:
    """Look the frontend's user up, creating them on first sight; keeps the display name current."""
    user = find_user(session, client, username=wire_user.id, auth_method=wire_user.auth_method)
    if user is not None:
        if wire_user.display_name and user.display_name != wire_user.display_name and not user.deleted:
            user.display_name = wire_user.display_name
        return user
    is_system = wire_user.auth_method == "system"
    user = User(
        id=uuid.uuid4(),
        username=wire_user.id,
        auth_method=wire_user.auth_method,
        display_name=wire_user.display_name or wire_user.id,
        api_client_id=client.id,
        show_on_leaderboard=not is_system,
        tos_acceptance_date=utcnow() if is_system else None,
    )
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        # A concurrent request created the same user first: use theirs.
        found = find_user(session, client, username=wire_user.id, auth_method=wire_user.auth_method)
        assert found is not None
        return found
    return user


def ensure_user_can_work(user: User, *, enforce_tos: bool) -> None:
    """Task calls need an enabled, not deleted user who accepted the terms of service."""
    if not user.enabled or user.deleted:
        raise OasstError(
            "This user is disabled and cannot work on tasks.",
            ErrorCode.USER_DISABLED,
            HTTPStatus.SERVICE_UNAVAILABLE,
        )
    if enforce_tos and user.tos_acceptance_date is None:
        raise OasstError(
            "The user has not accepted the terms of service: set tos_acceptance=true on the user first.",
            ErrorCode.USER_HAS_NOT_ACCEPTED_TOS,
            HTTPStatus.UNAVAILABLE_FOR_LEGAL_REASONS,
        )


@dataclass(frozen=True)
class Worker:
    """What task calls need to know about a user; cached briefly so most calls skip the lookup."""

    id: uuid.UUID
    enabled: bool
    deleted: bool
    tos_accepted: bool


class TaskCaches:
    """Per-process caches of the task endpoints, each short-lived:

    * frontend user -> :class:`Worker` (5 s);
    * users whose activity was written in the last minute (60 s);
    * language -> initial prompts available after the last prompt lottery (0.2 s by default), so the
      lottery runs a few times a second per language and process instead of on every request.
    """

    def __init__(
        self, ttl_sec: float = 5.0, activity_interval_sec: float = 60.0, lottery_sec: float = 0.2
    ) -> None:
        self.workers = TtlCache(ttl_sec)
        self.recent_activity = TtlCache(activity_interval_sec)
        self.lottery = TtlCache(lottery_sec)

    def clear(self) -> None:
        self.workers.clear()
        self.recent_activity.clear()
        self.lottery.clear()


def resolve_worker(
    session: Session, client: ApiClient, wire_user: WireUser, *, cache: TaskCaches | None, enforce_tos: bool
) -> Worker:
    """The working user (created on first sight), checked to be allowed to work on tasks.

    A ban or ToS change made through another server process applies here within the cache's 5 s.
    """
    key = (client.id, wire_user.auth_method, wire_user.id)
    worker: Worker | None = cache.workers.get(key) if cache is not None else None
    if worker is None:
        user = get_or_create_user(session, client, wire_user)
        worker = Worker(user.id, user.enabled, user.deleted, user.tos_acceptance_date is not None)
        if cache is not None and user.enabled and not user.deleted:
            cache.workers.put(key, worker)
    if not worker.enabled or worker.deleted:
        raise OasstError(
            "This user is disabled and cannot work on tasks.",
            ErrorCode.USER_DISABLED,
            HTTPStatus.SERVICE_UNAVAILABLE,
        )
    if enforce_tos and not worker.tos_accepted:
        if cache is not None:
            cache.workers.pop(key)  # they may accept any moment: look again next time
        raise OasstError(
            "The user has not accepted the terms of service: set tos_acceptance=true on the user first.",
            ErrorCode.USER_HAS_NOT_ACCEPTED_TOS,
            HTTPStatus.UNAVAILABLE_FOR_LEGAL_REASONS,
        )
    return worker


def record_activity(session: Session, worker: Worker, *, cache: TaskCaches | None) -> None:
    """Stamp activity and the streak; at most once a minute per user (streaks count whole days)."""
    if cache is not None and cache.recent_activity.get(worker.id):
        return
    user = session.get(User, worker.id)
    if user is not None:
        update_last_activity(user, update_streak=True)
    if cache is not None:
        cache.recent_activity.put(worker.id, True)


def update_last_activity(user: User, *, update_streak: bool) -> None:
    """Stamp activity; a streak counts whole days since it began (the original's rule)."""
    now = utcnow()
    user.last_activity_date = now
    if update_streak:
        if user.streak_last_day_date is None or user.streak_days is None:
            user.streak_last_day_date = now
            user.streak_days = 0
        else:
            user.streak_days = (now - user.streak_last_day_date) // timedelta(days=1)
