"""``AccountStore``: every read and write of the website's account tables, each in one transaction.

Methods are synchronous (SQLAlchemy on a plain engine); routes call them in a worker thread. They return
:class:`AccountView` snapshots, never live ORM objects.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from oasst.sqlkit import make_service_engine, upgrade_schema
from oasst.web.accounts.models import Account, Identity, LoginToken, Role

OAUTH_PROVIDERS = ("discord", "github", "google")
MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"


@dataclass(frozen=True)
class BackendIdentity:
    """How the backend knows this person: the ``{id, display_name, auth_method}`` of its protocol.

    A Discord sign-in maps to ``("discord", <discord id>)``, the same user the Discord bot reports, so
    one person is one backend user everywhere. E-mail and development accounts are ``local``.
    """

    id: str
    display_name: str
    auth_method: str


@dataclass(frozen=True)
class AccountView:
    id: str
    display_name: str
    email: str | None
    role: Role
    tos_version: int
    tasks_done: int
    session_epoch: int
    identities: tuple[tuple[str, str], ...]

    @property
    def is_moderator(self) -> bool:
        return self.role in (Role.moderator, Role.admin)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    @property
    def backend(self) -> BackendIdentity:
        for provider, subject in self.identities:
            if provider in OAUTH_PROVIDERS:
                return BackendIdentity(subject, self.display_name, provider)
        return BackendIdentity(self.id, self.display_name, "local")


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def make_account_engine(url: str) -> Engine:
    # the store's transactions are short and mostly single statements: SQLite's default deferred BEGIN
    return make_service_engine(url, sqlite_begin_immediate=False)


class AccountStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- schema ----------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the account tables to the newest revision (their own Alembic history)."""
        upgrade_schema(self.engine, MIGRATIONS_DIR, lock="web")

    # -- reads -----------------------------------------------------------------------------------

    def get(self, account_id: str) -> AccountView | None:
        with self._sessions() as session:
            account = session.get(Account, account_id)
            return _view(session, account) if account is not None else None

    def by_backend_ids(self, ids: list[tuple[str, str]]) -> dict[tuple[str, str], AccountView]:
        """Accounts for ``(auth_method, backend id)`` pairs, e.g. to show roles in the admin's user list."""
        found: dict[tuple[str, str], AccountView] = {}
        local = [i for m, i in ids if m == "local"]
        remote = [(m, i) for m, i in ids if m != "local"]
        with self._sessions() as session:
            if local:
                for account in session.scalars(select(Account).where(Account.id.in_(local))):
                    found[("local", account.id)] = _view(session, account)
            for method, subject in remote:
                identity = session.scalar(
                    select(Identity).where(Identity.provider == method, Identity.subject == subject)
                )
                owner = session.get(Account, identity.account_id) if identity is not None else None
                if owner is not None:
                    found[(method, subject)] = _view(session, owner)
        return found

    # -- sign-in ---------------------------------------------------------------------------------

    def sign_in(
        self,
        provider: str,
        subject: str,
        *,
        display_name: str,
        email: str | None = None,
        role: Role = Role.general,
    ) -> AccountView:
        """The account signed in by ``(provider, subject)``, created on first sight.

        An OAuth identity whose verified e-mail matches an existing account joins that account. ``role``
        applies only to a new account.
        """
        for _ in range(3):  # two first sign-ins of one person race on the unique constraint
            try:
                with self._sessions.begin() as session:
                    return self._sign_in(session, provider, subject, display_name, email, role)
            except IntegrityError:
                continue
        raise RuntimeError("could not create the account (concurrent sign-ins)")

    def _sign_in(
        self,
        session: Session,
        provider: str,
        subject: str,
        display_name: str,
        email: str | None,
        role: Role,
    ) -> AccountView:
        identity = session.scalar(
            select(Identity).where(Identity.provider == provider, Identity.subject == subject)
        )
        if identity is not None:
            account = session.get(Account, identity.account_id)
            assert account is not None
            return _view(session, account)
        account = session.scalar(select(Account).where(Account.email == email)) if email else None
        if account is None:
            account = Account(display_name=display_name[:256] or "anonymous", email=email, role=role.value)
            account.tos_version = 0
            account.tasks_done = 0
            account.session_epoch = 0
            session.add(account)
            session.flush()
        session.add(Identity(account_id=account.id, provider=provider, subject=subject))
        session.flush()
        return _view(session, account)

    def create_login_token(self, email: str, next_url: str, minutes: int) -> str:
        raw = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(minutes=minutes)
        with self._sessions.begin() as session:
            session.add(
                LoginToken(token_hash=hash_token(raw), email=email, next_url=next_url, expires_at=expires)
            )
        return raw

    def redeem_login_token(self, raw: str) -> tuple[str, str] | None:
        """``(email, next_url)`` of a valid, unused link, marking it used; ``None`` otherwise (one winner)."""
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            token = session.get(LoginToken, hash_token(raw))
            if token is None or token.used_at is not None or _aware(token.expires_at) <= now:
                return None
            claimed = session.execute(
                update(LoginToken)
                .where(LoginToken.token_hash == token.token_hash, LoginToken.used_at.is_(None))
                .values(used_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return token.email, token.next_url

    # -- account changes -------------------------------------------------------------------------

    def accept_tos(self, account_id: str, version: int) -> None:
        self._update(account_id, tos_version=version)

    def rename(self, account_id: str, display_name: str) -> None:
        self._update(account_id, display_name=display_name)

    def set_role(self, account_id: str, role: Role) -> None:
        values: dict[str, object] = {"role": role.value}
        if role is Role.banned:
            values["session_epoch"] = Account.session_epoch + 1
        self._update(account_id, **values)

    def sign_out_everywhere(self, account_id: str) -> None:
        self._update(account_id, session_epoch=Account.session_epoch + 1)

    def count_task(self, account_id: str) -> None:
        self._update(account_id, tasks_done=Account.tasks_done + 1)

    def delete(self, account_id: str) -> None:
        with self._sessions.begin() as session:
            session.execute(delete(Identity).where(Identity.account_id == account_id))
            session.execute(delete(Account).where(Account.id == account_id))

    def count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Account)) or 0)

    def _update(self, account_id: str, **values: object) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Account).where(Account.id == account_id).values(**values))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _view(session: Session, account: Account) -> AccountView:
    identities = session.execute(
        select(Identity.provider, Identity.subject)
        .where(Identity.account_id == account.id)
        .order_by(Identity.id)
    ).all()
    return AccountView(
        id=account.id,
        display_name=account.display_name,
        email=account.email,
        role=Role(account.role),
        tos_version=account.tos_version,
        tasks_done=account.tasks_done,
        session_epoch=account.session_epoch,
        identities=tuple((p, s) for p, s in identities),
    )
