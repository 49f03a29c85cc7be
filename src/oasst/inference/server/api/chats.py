"""``/chats``: the signed-in user's chats (list, search, create, read, update, hide, delete, export)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from oasst.inference.protocol import ChatPage, ChatRead, ChatWithMessages, CreateChat, UpdateChat
from oasst.inference.server.api.deps import CurrentUser, DatabaseDep
from oasst.inference.server.services import chats as service
from oasst.inference.server.services import export

router = APIRouter(prefix="/chats", tags=["chats"])


@router.get("")
async def list_chats(
    user: CurrentUser,
    db: DatabaseDep,
    include_hidden: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Search titles and messages")] = None,
) -> ChatPage:
    def work(s: Session) -> ChatPage:
        rows, nxt = service.list_chats(
            s, user.user_id, include_hidden=include_hidden, limit=limit, cursor=cursor, q=q
        )
        return ChatPage(items=[service.chat_read(c) for c in rows], next=nxt)

    return await db.aread(work)


@router.post("", status_code=201)
async def create_chat(body: CreateChat, user: CurrentUser, db: DatabaseDep) -> ChatRead:
    return await db.awrite(
        lambda s: service.chat_read(
            service.create_chat(s, user_id=user.user_id, display_name=user.display_name, body=body)
        )
    )


@router.post("/hide-all", status_code=204)
async def hide_all(user: CurrentUser, db: DatabaseDep) -> None:
    await db.awrite(lambda s: service.hide_all(s, user.user_id))


@router.get("/{chat_id}")
async def get_chat(chat_id: str, user: CurrentUser, db: DatabaseDep) -> ChatWithMessages:
    return await db.aread(lambda s: service.chat_with_messages(s, service.get_chat(s, chat_id, user.user_id)))


@router.patch("/{chat_id}")
async def update_chat(chat_id: str, body: UpdateChat, user: CurrentUser, db: DatabaseDep) -> ChatRead:
    return await db.awrite(
        lambda s: service.chat_read(service.update_chat(s, service.get_chat(s, chat_id, user.user_id), body))
    )


@router.delete("/{chat_id}", status_code=204)
async def delete_chat(chat_id: str, user: CurrentUser, db: DatabaseDep) -> None:
    await db.awrite(lambda s: service.delete_chat(s, service.get_chat(s, chat_id, user.user_id)))


@router.get("/{chat_id}/export")
async def export_chat(
    chat_id: str, user: CurrentUser, db: DatabaseDep, format: Literal["md", "json"] = "json"
) -> Response:
    def work(s: Session) -> Response:
        chat = service.get_chat(s, chat_id, user.user_id)
        disposition = {"Content-Disposition": f'attachment; filename="chat-{chat.id}.{format}"'}
        if format == "md":
            return Response(export.chat_markdown(s, chat), media_type="text/markdown", headers=disposition)
        body = export.chat_json(s, chat).model_dump_json(indent=2)
        return Response(body, media_type="application/json", headers=disposition)

    return await db.aread(work)
