"""Chat export for its owner (Markdown, JSON), and the opted-in chats for the loop back to training."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from oasst.inference.protocol import ChatRead, ChatWithMessages, MessageRead, MessageState
from oasst.inference.server.models import Chat, Report
from oasst.inference.server.services.chats import chat_messages, chat_read, message_read


def chat_json(session: Session, chat: Chat) -> ChatWithMessages:
    return ChatWithMessages(
        **chat_read(chat).model_dump(), messages=[message_read(m) for m in chat_messages(session, chat.id)]
    )


def chat_markdown(session: Session, chat: Chat) -> str:
    """The whole tree, depth first; each message is numbered by its path (``1.2`` = 2nd reply to ``1``)."""
    messages = [message_read(m) for m in chat_messages(session, chat.id)]
    children: dict[str | None, list[MessageRead]] = defaultdict(list)
    for m in messages:
        children[m.parent_id].append(m)
    lines = [f"# {chat.title or 'Chat'}", ""]
    if chat.system_prompt:
        lines += ["**System prompt:**", "", chat.system_prompt, ""]
    if chat.custom_instructions:
        lines += ["**Custom instructions:**", "", chat.custom_instructions, ""]

    def walk(parent: str | None, prefix: str) -> None:
        siblings = children.get(parent, [])
        for n, m in enumerate(siblings, start=1):
            number = f"{prefix}{n}"
            who = "User" if m.role == "user" else f"Assistant ({m.model or 'model'})"
            notes = []
            if len(siblings) > 1:
                notes.append(f"alternative {n} of {len(siblings)}")
            if m.state not in {MessageState.manual, MessageState.complete}:
                notes.append(m.state.value)
            if m.score:
                notes.append(f"vote {m.score:+d}")
            if m.selected:
                notes.append("picked")
            suffix = f" — {', '.join(notes)}" if notes else ""
            lines.extend([f"## {number}. {who}{suffix}", "", m.content or "_(empty)_", ""])
            walk(m.id, f"{number}.")

    walk(None, "")
    return "\n".join(lines).rstrip() + "\n"


@dataclass
class ReportRecord:
    message_id: str
    report_type: str
    reason: str


@dataclass
class OptedInChat:
    """One chat whose owner allows data use: its tree (votes in ``score``, draft picks in ``selected``)."""

    user_id: str
    chat: ChatRead
    messages: list[MessageRead]
    reports: list[ReportRecord] = field(default_factory=list)


def iter_opted_in_chats(session: Session, *, batch: int = 100) -> Iterator[OptedInChat]:
    """Every chat of a person with ``allow_data_use`` and at least one complete assistant reply.

    Deleted chats, opted-out chats and the hidden chats of ``/v1`` requests are never read.
    """
    cursor = ""
    while True:
        chats = list(
            session.scalars(
                select(Chat)
                .where(
                    Chat.allow_data_use.is_(True),
                    Chat.deleted.is_(False),
                    Chat.user_id.is_not(None),
                    Chat.id > cursor,
                )
                .order_by(Chat.id)
                .limit(batch)
            )
        )
        if not chats:
            return
        for chat in chats:
            rows = chat_messages(session, chat.id)
            if not any(m.role == "assistant" and m.state == MessageState.complete.value for m in rows):
                continue
            reports = session.scalars(
                select(Report).where(Report.message_id.in_([m.id for m in rows])).order_by(Report.id)
            ).all()
            yield OptedInChat(
                user_id=chat.user_id or "",
                chat=chat_read(chat),
                messages=[message_read(m) for m in rows],
                reports=[ReportRecord(r.message_id, r.report_type, r.reason) for r in reports],
            )
        cursor = chats[-1].id


__all__ = ["OptedInChat", "ReportRecord", "chat_json", "chat_markdown", "iter_opted_in_chats"]
