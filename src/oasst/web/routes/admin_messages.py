"""``/admin/messages``: search every message; on one message, its tree, the tree's state and the text's
revision history, with delete/undelete, halt/resume of the tree, and editing (write, preview, save)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from oasst.client import BackendClient
from oasst.protocol.common import Message, MessageTreeStateResponse
from oasst.web.deps import BackendDep, CsrfDep, ModeratorDep, backend_user, backend_user_id
from oasst.web.errors import invalid, unless_missing
from oasst.web.routes.admin_common import PAGE_SIZE, done_redirect, notice
from oasst.web.templating import render

router = APIRouter()

Cursor = Annotated[str | None, Query(max_length=512)]
HALTED = "halted_by_moderator"
TEXT_MAX = 20_000


@dataclass
class TreeNode:
    message: Message
    children: list[TreeNode] = field(default_factory=list)


def build_tree(messages: list[Message]) -> list[TreeNode]:
    """The tree's messages as nested nodes, oldest reply first (roots: messages whose parent is absent)."""
    ordered = sorted(messages, key=lambda m: (m.created_date is None, m.created_date, str(m.id)))
    nodes = {m.id: TreeNode(m) for m in ordered}
    children: defaultdict[UUID | None, list[TreeNode]] = defaultdict(list)
    for m in ordered:
        parent = m.parent_id if m.parent_id in nodes else None
        children[parent].append(nodes[m.id])
    for node in nodes.values():
        node.children = children.get(node.message.id, [])
    return children.get(None, [])


@router.get("/admin/messages")
async def messages_list(
    request: Request,
    account: ModeratorDep,
    backend: BackendDep,
    q: Annotated[str, Query(max_length=256)] = "",
    lang: Annotated[str, Query(max_length=32)] = "",
    include_deleted: bool = False,
    after: Cursor = None,
    before: Cursor = None,
) -> Response:
    """Newest messages first; ``q`` must match every word (full-text search on PostgreSQL)."""
    page = await backend.messages_page(
        search_query=q.strip() or None,
        lang=lang.strip() or None,
        include_deleted=include_deleted,
        include_user=True,
        desc=True,
        after=after,
        before=before,
        max_count=PAGE_SIZE,
    )
    filters = {"q": q, "lang": lang, "include_deleted": "true" if include_deleted else ""}
    return render(
        request,
        "admin/messages.html",
        section="messages",
        page=page,
        q=q,
        lang_filter=lang,
        include_deleted=include_deleted,
        pager_params={k: v for k, v in filters.items() if v},
    )


async def _tree_state(backend: BackendClient, message_id: UUID) -> MessageTreeStateResponse | None:
    return await unless_missing(backend.get_tree_state(message_id), None)


@router.get("/admin/messages/{message_id}")
async def message_page(
    request: Request,
    message_id: UUID,
    account: ModeratorDep,
    backend: BackendDep,
    done: str | None = None,
) -> Response:
    message = await backend.get_message(message_id)
    tree, state, history = await asyncio.gather(
        backend.get_tree(message_id, include_deleted=True, include_spam=True),
        _tree_state(backend, message_id),
        backend.message_history(message_id),
    )
    return render(
        request,
        "admin/message.html",
        section="messages",
        message=message,
        roots=build_tree(tree.messages),
        state=state,
        halted=state is not None and state.state == HALTED,
        history=history,
        notice=notice(done),
    )


@router.post("/admin/messages/{message_id}/delete")
async def delete_message(
    message_id: UUID, _csrf: CsrfDep, account: ModeratorDep, backend: BackendDep
) -> Response:
    await backend.delete_message(message_id)
    return done_redirect(f"/admin/messages/{message_id}", "deleted")


@router.post("/admin/messages/{message_id}/undelete")
async def undelete_message(
    message_id: UUID, _csrf: CsrfDep, account: ModeratorDep, backend: BackendDep
) -> Response:
    await backend.undelete_message(message_id)
    return done_redirect(f"/admin/messages/{message_id}", "undeleted")


@router.post("/admin/messages/{message_id}/halt")
async def halt_tree(message_id: UUID, _csrf: CsrfDep, account: ModeratorDep, backend: BackendDep) -> Response:
    await backend.set_tree_halted(message_id, halt=True)
    return done_redirect(f"/admin/messages/{message_id}", "halted")


@router.post("/admin/messages/{message_id}/resume")
async def resume_tree(
    message_id: UUID, _csrf: CsrfDep, account: ModeratorDep, backend: BackendDep
) -> Response:
    await backend.set_tree_halted(message_id, halt=False)
    return done_redirect(f"/admin/messages/{message_id}", "resumed")


@router.get("/admin/messages/{message_id}/edit")
async def edit_page(
    request: Request, message_id: UUID, account: ModeratorDep, backend: BackendDep
) -> Response:
    message = await backend.get_message(message_id)
    return render(
        request, "admin/edit.html", section="messages", message=message, text=message.text, preview=False
    )


@router.post("/admin/messages/{message_id}/edit")
async def edit_message(
    request: Request,
    message_id: UUID,
    _csrf: CsrfDep,
    account: ModeratorDep,
    backend: BackendDep,
    text: Annotated[str, Form(max_length=TEXT_MAX)],
    action: Annotated[Literal["preview", "save"], Form()] = "save",
) -> Response:
    """``preview`` shows the new text rendered as it will be; ``save`` edits (the old text stays a revision)."""
    if not text.strip():
        raise invalid("The new text may not be empty.")
    if action == "preview":
        message = await backend.get_message(message_id)
        return render(
            request, "admin/edit.html", section="messages", message=message, text=text, preview=True
        )
    await backend_user_id(request, account)  # the editor must exist on the backend
    await backend.edit_message(message_id, backend_user(account), text)
    return done_redirect(f"/admin/messages/{message_id}", "edited")
