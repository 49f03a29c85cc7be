"""Small factories that insert rows straight through the ORM, for tests of any backend service.

Everything takes the caller's session and only flushes; run them inside ``database.write(...)``::

    tree = database.write(lambda s: make_tree(s, client_for_key(s, keys.trusted), make_db_user(s, ..., 1)))

A tree's *shape* is nested lists: each list holds the replies of one message, so ``[[[]], []]`` is a root
with two replies, the first of which has one reply of its own. Roles alternate by depth (the root is the
prompter's). Messages get strictly increasing ``created_date`` values in creation (pre-)order, one second
apart, so ordering and pagination are deterministic.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from oasst.backend.models import (
    TERMINAL_STATES,
    ApiClient,
    Message,
    MessageTreeState,
    TreeState,
    User,
    utcnow,
)
from oasst.backend.services.clients import create_api_client, find_api_client
from tests.conftest import Keys

Shape = list["Shape"]

# A root with two assistant replies; the first has two prompter replies, the first of which has an assistant reply.
DEFAULT_SHAPE: Shape = [[[[]], []], []]

_counter = itertools.count(1)
_AFTER_LOTTERY = {
    TreeState.GROWING,
    TreeState.RANKING,
    TreeState.READY_FOR_SCORING,
    TreeState.READY_FOR_EXPORT,
    TreeState.SCORING_FAILED,
}


def client_for_key(session: Session, api_key: str) -> ApiClient:
    """The ``ApiClient`` row of a key (e.g. one from the ``keys`` fixture)."""
    client = find_api_client(session, api_key)
    assert client is not None, "no API client has this key"
    return client


def clients_for_keys(session: Session, keys: Keys) -> tuple[ApiClient, ApiClient]:
    """``(trusted, untrusted)`` client rows of the ``keys`` fixture."""
    return client_for_key(session, keys.trusted), client_for_key(session, keys.untrusted)


def make_client(session: Session, *, trusted: bool = False, description: str = "factory") -> ApiClient:
    return create_api_client(session, description=description, trusted=trusted)[0]


def make_db_user(
    session: Session,
    client: ApiClient,
    n: int | str | None = None,
    *,
    auth_method: str = "local",
    enabled: bool = True,
    tos_accepted: bool = True,
) -> User:
    """A user of ``client`` with username ``user-<n>`` (the same naming as ``conftest.make_user``)."""
    n = next(_counter) if n is None else n
    user = User(
        id=uuid.uuid4(),
        username=f"user-{n}",
        auth_method=auth_method,
        display_name=f"User {n}",
        api_client_id=client.id,
        enabled=enabled,
        tos_acceptance_date=utcnow() if tos_accepted else None,
    )
    session.add(user)
    session.flush()
    return user


def make_message(
    session: Session,
    client: ApiClient,
    author: User | None,
    *,
    parent: Message | None = None,
    text: str | None = None,
    role: str | None = None,
    lang: str = "en",
    review_result: bool | None = True,
    review_count: int = 0,
    created_date: datetime | None = None,
    frontend_message_id: str | None = None,
    deleted: bool = False,
    synthetic: bool = False,
) -> Message:
    """Insert one message (under ``parent`` or as a new root) and bump the parent's ``children_count``."""
    message_id = uuid.uuid4()
    if role is None:
        role = "prompter" if parent is None or parent.role == "assistant" else "assistant"
    message = Message(
        id=message_id,
        parent_id=parent.id if parent else None,
        message_tree_id=parent.message_tree_id if parent else message_id,
        user_id=author.id if author else None,
        role=role,
        api_client_id=client.id,
        frontend_message_id=frontend_message_id or f"fm-{message_id.hex}",
        created_date=created_date or utcnow(),
        text=text if text is not None else f"{role} message {message_id.hex[:8]}",
        lang=lang,
        depth=parent.depth + 1 if parent else 0,
        children_count=0,
        deleted=deleted,
        review_count=review_count,
        review_result=review_result,
        synthetic=synthetic,
        emojis={},
    )
    session.add(message)
    if parent is not None and not deleted:
        parent.children_count += 1
    session.flush()
    return message


def make_tree_state(
    session: Session,
    root: Message,
    *,
    state: str = TreeState.GROWING,
    goal_tree_size: int = 12,
    max_depth: int = 3,
    max_children_count: int = 3,
    active: bool | None = None,
    won_prompt_lottery_date: datetime | None = None,
) -> MessageTreeState:
    """The state row of ``root``'s tree. Trees past the prompt lottery get a lottery date (now) unless
    one is given, as they would have in real life."""
    if won_prompt_lottery_date is None and state in _AFTER_LOTTERY:
        won_prompt_lottery_date = utcnow()
    mts = MessageTreeState(
        message_tree_id=root.id,
        goal_tree_size=goal_tree_size,
        max_depth=max_depth,
        max_children_count=max_children_count,
        state=str(state),
        active=state not in TERMINAL_STATES if active is None else active,
        won_prompt_lottery_date=won_prompt_lottery_date,
        lang=root.lang,
    )
    session.add(mts)
    session.flush()
    return mts


@dataclass
class Tree:
    """A tree made by :func:`make_tree`: its messages in creation (pre-)order, the root first."""

    messages: list[Message]
    state: MessageTreeState
    children: dict[uuid.UUID, list[Message]] = field(default_factory=dict)

    @property
    def root(self) -> Message:
        return self.messages[0]

    @property
    def id(self) -> uuid.UUID:
        return self.root.id

    def at(self, *path: int) -> Message:
        """The message reached by child indexes from the root: ``at()`` is the root, ``at(0, 1)`` …"""
        message = self.root
        for index in path:
            message = self.children[message.id][index]
        return message


def make_tree(
    session: Session,
    client: ApiClient,
    author: User | Sequence[User],
    *,
    lang: str = "en",
    state: str = TreeState.GROWING,
    shape: Shape | None = None,
    review_result: bool | None = True,
    start: datetime | None = None,
    texts: Sequence[str] | None = None,
    **state_kwargs: object,
) -> Tree:
    """Insert a whole tree and its state row.

    ``author`` may be a sequence of users, used in turn per message. ``texts`` (in pre-order) replaces the
    generated texts. ``state_kwargs`` go to :func:`make_tree_state` (e.g. ``goal_tree_size``).
    """
    authors = [author] if isinstance(author, User) else list(author)
    start = start or utcnow() - timedelta(hours=1)
    tree = Tree(messages=[], state=None)  # type: ignore[arg-type]

    def add(parent: Message | None, replies: Shape) -> None:
        i = len(tree.messages)
        message = make_message(
            session,
            client,
            authors[i % len(authors)],
            parent=parent,
            lang=lang,
            review_result=review_result,
            created_date=start + timedelta(seconds=i),
            text=texts[i] if texts is not None else None,
        )
        tree.messages.append(message)
        tree.children[message.id] = []
        if parent is not None:
            tree.children[parent.id].append(message)
        for sub in replies:
            add(message, sub)

    add(None, DEFAULT_SHAPE if shape is None else shape)
    tree.state = make_tree_state(session, tree.root, state=state, **state_kwargs)  # type: ignore[arg-type]
    return tree


def wire_user(user_or_n: User | int | str, auth_method: str = "local") -> dict[str, str]:
    """The ``{id, display_name, auth_method}`` body a frontend sends for a user (a row or ``user-<n>``)."""
    if isinstance(user_or_n, User):
        return {
            "id": user_or_n.username,
            "display_name": user_or_n.display_name,
            "auth_method": user_or_n.auth_method,
        }
    return {"id": f"user-{user_or_n}", "display_name": f"User {user_or_n}", "auth_method": auth_method}


@dataclass
class World:
    """A typical scene: two clients, two users of the trusted one, a tree, and a root by the untrusted one."""

    trusted: ApiClient
    untrusted: ApiClient
    alice: User
    bob: User
    tree: Tree  # DEFAULT_SHAPE with texts "text 0".."text 5", written in turn by alice and bob (trusted)
    own: Message  # a root with frontend id "u-1" by carol, the untrusted client's user
    untrusted_key: str


def make_world(session: Session, keys: Keys) -> World:
    trusted, untrusted = clients_for_keys(session, keys)
    alice, bob = make_db_user(session, trusted, "alice"), make_db_user(session, trusted, "bob")
    tree = make_tree(session, trusted, [alice, bob], texts=[f"text {i}" for i in range(6)])
    carol = make_db_user(session, untrusted, "carol")
    own = make_message(session, untrusted, carol, text="untrusted root", frontend_message_id="u-1")
    make_tree_state(session, own)
    return World(trusted, untrusted, alice, bob, tree, own, keys.untrusted)
