"""Request parameters that several routers share, parsed once by a dependency into a small value
that can also run the read they ask for (it holds the request's database and API client).

The dependencies are async, like those in :mod:`oasst.backend.api.deps`, so parsing costs no thread
hop. Their parameter names and defaults are the wire names of the original Open Assistant backend; a
route adds only what is its own (the owner of a listing, a flag the original named differently there).
Routes declare these before ``FrontendUserDep`` so the API key is checked before ``x-oasst-user``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from sqlalchemy.orm import Session

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, FrontendUserDep
from oasst.backend.db import Database
from oasst.backend.models import ApiClient, Message, User
from oasst.backend.services import messages as messages_service
from oasst.backend.services import users as users_service
from oasst.backend.services.conversations import frontend_user as to_frontend_user
from oasst.protocol import common as wire

T = TypeVar("T")

MaxMessages = Annotated[int, Query(gt=0, le=messages_service.MAX_PAGE_SIZE)]
MaxUsers = Annotated[int, Query(gt=0, le=10_000)]


# ------------------------------------------------------------------------------------ message listings


def read_as(
    database: Database,
    client: ApiClient,
    frontend_user: tuple[str, str] | None,
    read: Callable[[Session, User | None], T],
) -> T:
    """``read`` in one read transaction, for the user ``frontend_user`` names (``None``: anonymous)."""

    def work(session: Session) -> T:
        return read(
            session, messages_service.find_reader(session, client=client, frontend_user=frontend_user)
        )

    return database.read(work)


@dataclass(frozen=True)
class MessageListQuery:
    """``GET …/messages``: messages by creation date, newest first unless ``desc=false``."""

    database: Database
    client: ApiClient
    filters: messages_service.MessageFilter
    desc: bool
    max_count: int

    def read(self, frontend_user: tuple[str, str] | None, **narrowed: Any) -> list[wire.Message]:
        """The messages, narrowed by the route's own filters, as ``frontend_user`` sees them."""
        filters = replace(self.filters, **narrowed)
        return read_as(
            self.database,
            self.client,
            frontend_user,
            lambda s, reader: messages_service.list_messages(
                s,
                client=self.client,
                filters=filters,
                desc=self.desc,
                max_count=self.max_count,
                reader=reader,
            ),
        )


async def message_list_query(
    database: DatabaseDep,
    client: ApiClientDep,
    api_client_id: uuid.UUID | None = None,
    max_count: MaxMessages = 10,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    only_roots: bool = False,
    desc: bool = True,
    lang: str | None = None,
) -> MessageListQuery:
    # No reader here: `/frontend_users/…/messages` reads as the owner, not as `x-oasst-user`. No deleted
    # flag either: `/messages` names it `allow_deleted`, the others `include_deleted`.
    filters = messages_service.MessageFilter(
        api_client_id=api_client_id,
        start_date=start_date,
        end_date=end_date,
        only_roots=only_roots,
        lang=lang,
    )
    return MessageListQuery(database, client, filters, desc=desc, max_count=max_count)


@dataclass(frozen=True)
class MessageCursorQuery:
    """``GET …/messages/cursor``: one keyset page; cursors look like ``<uuid>$<iso date>``."""

    database: Database
    client: ApiClient
    frontend_user: tuple[str, str] | None
    filters: messages_service.MessageFilter
    before: str | None
    after: str | None
    desc: bool
    max_count: int

    def read(self, *, include_user: bool = False, **narrowed: Any) -> wire.MessagePage:
        """The page, narrowed by the route's own filters, as the ``x-oasst-user`` reader sees it."""
        filters = replace(self.filters, **narrowed)
        return read_as(
            self.database,
            self.client,
            self.frontend_user,
            lambda s, reader: messages_service.cursor_page(
                s,
                client=self.client,
                filters=filters,
                before=self.before,
                after=self.after,
                desc=self.desc,
                max_count=self.max_count,
                reader=reader,
                include_user=include_user,
            ),
        )


async def message_cursor_query(
    database: DatabaseDep,
    client: ApiClientDep,
    frontend_user: FrontendUserDep,
    before: str | None = None,
    after: str | None = None,
    only_roots: bool = False,
    include_deleted: bool = False,
    max_count: MaxMessages = 10,
    desc: bool = False,
    lang: str | None = None,
) -> MessageCursorQuery:
    filters = messages_service.MessageFilter(
        only_roots=only_roots, include_deleted=include_deleted, lang=lang
    )
    return MessageCursorQuery(
        database, client, frontend_user, filters, before=before, after=after, desc=desc, max_count=max_count
    )


MessageListQueryDep = Annotated[MessageListQuery, Depends(message_list_query)]
MessageCursorQueryDep = Annotated[MessageCursorQuery, Depends(message_cursor_query)]


# ----------------------------------------------------------------------------------------- user lists


@dataclass(frozen=True)
class UserListQuery:
    """``GET /users/by_…``: users by a sort key then id; the routes name the sort key's bounds."""

    database: Database
    client: ApiClient
    api_client_id: uuid.UUID | None
    gt_id: uuid.UUID | None
    lt_id: uuid.UUID | None
    search_text: str | None
    auth_method: str | None
    max_count: int

    def read(
        self, *, sort_key: str, gte: str | None, lte: str | None, desc: bool = False
    ) -> list[wire.FrontEndUser]:
        """``gte``/``lte`` bound ``sort_key`` inclusively; ``gt_id``/``lt_id`` break ties."""
        return self.database.read(
            lambda s: [
                to_frontend_user(u)
                for u in users_service.list_users(
                    s,
                    self.client,
                    sort_key=sort_key,
                    gte=gte,
                    gt_id=self.gt_id,
                    lte=lte,
                    lt_id=self.lt_id,
                    api_client_id=self.api_client_id,
                    auth_method=self.auth_method,
                    search_text=self.search_text,
                    limit=self.max_count,
                    desc=desc,
                )
            ]
        )


async def user_list_query(
    database: DatabaseDep,
    client: ApiClientDep,
    api_client_id: uuid.UUID | None = None,
    gt_id: uuid.UUID | None = None,
    lt_id: uuid.UUID | None = None,
    search_text: str | None = None,
    auth_method: str | None = None,
    max_count: MaxUsers = 100,
) -> UserListQuery:
    return UserListQuery(database, client, api_client_id, gt_id, lt_id, search_text, auth_method, max_count)


UserListQueryDep = Annotated[UserListQuery, Depends(user_list_query)]


# ------------------------------------------------------------------------------ one message's views


@dataclass(frozen=True)
class MessageLookup:
    """A message named in the path, looked up for the calling client, and the user who reads it."""

    database: Database
    client: ApiClient
    frontend_user: tuple[str, str] | None
    find: Callable[[Session], Message]

    def render(self, view: messages_service.View[T]) -> T:
        """``view`` of the message for the reading user, in one read transaction."""

        def work(session: Session) -> T:
            message = self.find(session)
            reader = messages_service.find_reader(
                session, client=self.client, frontend_user=self.frontend_user
            )
            return view(session, message, reader)

        return self.database.read(work)

    def render_tree(self, *, include_spam: bool, include_deleted: bool) -> wire.MessageTree:
        """The message's whole tree (``include_spam=false``: only accepted messages)."""
        return self.render(
            partial(messages_service.tree_view, include_spam=include_spam, include_deleted=include_deleted)
        )


async def message_by_id(
    message_id: uuid.UUID, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> MessageLookup:
    find = partial(messages_service.get_message, client=client, message_id=message_id)
    return MessageLookup(database, client, frontend_user, find)


async def message_by_frontend_id(
    frontend_message_id: str, database: DatabaseDep, client: ApiClientDep, frontend_user: FrontendUserDep
) -> MessageLookup:
    find = partial(
        messages_service.get_message_by_frontend_id, client=client, frontend_message_id=frontend_message_id
    )
    return MessageLookup(database, client, frontend_user, find)


MessageById = Annotated[MessageLookup, Depends(message_by_id)]
MessageByFrontendId = Annotated[MessageLookup, Depends(message_by_frontend_id)]
