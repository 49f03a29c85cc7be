"""Messages and trees (``/messages``, ``/frontend_messages``) and labels (``/text_labels``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, TypeAdapter

from oasst.client._base import BackendBase, dump, query, segment, user_header
from oasst.protocol.common import (
    Conversation,
    EmojiCode,
    EmojiOp,
    Message,
    MessageEditRequest,
    MessageEmojiRequest,
    MessagePage,
    MessageRevision,
    MessageTree,
    MessageTreeStateResponse,
    SyntheticCandidate,
    SyntheticReplyRequest,
    User,
    ValidLabelsResponse,
)
from oasst.protocol.tasks import TextLabels

MESSAGES_ADAPTER: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
_REVISIONS_ADAPTER: TypeAdapter[list[MessageRevision]] = TypeAdapter(list[MessageRevision])
_CANDIDATES_ADAPTER: TypeAdapter[list[SyntheticCandidate]] = TypeAdapter(list[SyntheticCandidate])


class MessagesApi(BackendBase):
    """Read, list and moderate messages; post labels and reports."""

    # -- one message, by internal id -------------------------------------------------------------

    async def get_message(self, message_id: UUID | str, *, as_user: User | None = None) -> Message:
        """``GET /messages/{id}``."""
        return await self._view(f"/messages/{message_id}", Message, "message", as_user)

    async def get_conversation(self, message_id: UUID | str, *, as_user: User | None = None) -> Conversation:
        """``GET /messages/{id}/conversation``: the thread from the tree's root down to the message."""
        return await self._view(f"/messages/{message_id}/conversation", Conversation, "conversation", as_user)

    async def get_children(self, message_id: UUID | str, *, as_user: User | None = None) -> list[Message]:
        """``GET /messages/{id}/children``: the direct replies."""
        return await self._view(f"/messages/{message_id}/children", MESSAGES_ADAPTER, "messages", as_user)

    async def get_descendants(self, message_id: UUID | str, *, as_user: User | None = None) -> MessageTree:
        """``GET /messages/{id}/descendants``: the subtree below the message (its ``id`` is the message's)."""
        return await self._view(f"/messages/{message_id}/descendants", MessageTree, "message tree", as_user)

    async def get_longest_conversation(
        self, message_id: UUID | str, *, as_user: User | None = None
    ) -> Conversation:
        """``GET /messages/{id}/longest_conversation_in_tree``."""
        path = f"/messages/{message_id}/longest_conversation_in_tree"
        return await self._view(path, Conversation, "conversation", as_user)

    async def get_max_children(self, message_id: UUID | str, *, as_user: User | None = None) -> MessageTree:
        """``GET /messages/{id}/max_children_in_tree``: the message with the most replies, then those."""
        return await self._view(f"/messages/{message_id}/max_children_in_tree", MessageTree, "tree", as_user)

    async def get_tree(
        self,
        message_id: UUID | str,
        *,
        include_spam: bool = True,
        include_deleted: bool = False,
        as_user: User | None = None,
    ) -> MessageTree:
        """``GET /messages/{id}/tree``: the whole tree that holds the message."""
        params = query(include_spam=include_spam, include_deleted=include_deleted)
        return await self._view(f"/messages/{message_id}/tree", MessageTree, "message tree", as_user, params)

    async def get_tree_state(self, message_id: UUID | str) -> MessageTreeStateResponse:
        """``GET /messages/{id}/tree/state``: the lifecycle state of the message's tree."""
        data = await self._call("GET", f"/messages/{message_id}/tree/state")
        return self._parse(MessageTreeStateResponse, data, "tree state")

    # -- one message, by the frontend's own id ---------------------------------------------------

    async def get_frontend_message(self, frontend_message_id: str, *, as_user: User | None = None) -> Message:
        """``GET /frontend_messages/{id}``: a message by the id this frontend gave it (its ack id)."""
        path = f"/frontend_messages/{segment(frontend_message_id)}"
        return await self._view(path, Message, "message", as_user)

    async def get_frontend_conversation(
        self, frontend_message_id: str, *, as_user: User | None = None
    ) -> Conversation:
        """``GET /frontend_messages/{id}/conversation``."""
        path = f"/frontend_messages/{segment(frontend_message_id)}/conversation"
        return await self._view(path, Conversation, "conversation", as_user)

    async def get_frontend_children(
        self, frontend_message_id: str, *, as_user: User | None = None
    ) -> list[Message]:
        """``GET /frontend_messages/{id}/children``."""
        path = f"/frontend_messages/{segment(frontend_message_id)}/children"
        return await self._view(path, MESSAGES_ADAPTER, "messages", as_user)

    async def get_frontend_tree(
        self,
        frontend_message_id: str,
        *,
        include_spam: bool = True,
        include_deleted: bool = False,
        as_user: User | None = None,
    ) -> MessageTree:
        """``GET /frontend_messages/{id}/tree``."""
        path = f"/frontend_messages/{segment(frontend_message_id)}/tree"
        params = query(include_spam=include_spam, include_deleted=include_deleted)
        return await self._view(path, MessageTree, "message tree", as_user, params)

    # -- listings --------------------------------------------------------------------------------

    async def list_messages(
        self,
        *,
        auth_method: str | None = None,
        username: str | None = None,
        api_client_id: UUID | str | None = None,
        lang: str | None = None,
        only_roots: bool = False,
        include_deleted: bool = False,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        desc: bool = True,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> list[Message]:
        """``GET /messages/``: messages by creation date, newest first unless ``desc=False``."""
        params = query(
            auth_method=auth_method,
            username=username,
            api_client_id=api_client_id,
            lang=lang,
            only_roots=only_roots,
            allow_deleted=include_deleted,  # this route's name for the flag
            start_date=start_date,
            end_date=end_date,
            desc=desc,
            max_count=max_count,
        )
        return await self._view("/messages/", MESSAGES_ADAPTER, "messages", as_user, params)

    async def messages_page(
        self,
        *,
        before: str | None = None,
        after: str | None = None,
        user_id: UUID | str | None = None,
        auth_method: str | None = None,
        username: str | None = None,
        api_client_id: UUID | str | None = None,
        search_query: str | None = None,
        lang: str | None = None,
        only_roots: bool = False,
        include_deleted: bool = False,
        include_user: bool = False,
        desc: bool = False,
        max_count: int | None = None,
        as_user: User | None = None,
    ) -> MessagePage:
        """``GET /messages/cursor``: one keyset page; pass a page's ``next`` as ``after`` (``prev`` as
        ``before``) for the adjoining one. ``include_user`` fills each message's ``user``."""
        params = query(
            before=before,
            after=after,
            user_id=user_id,
            auth_method=auth_method,
            username=username,
            api_client_id=api_client_id,
            search_query=search_query,
            lang=lang,
            only_roots=only_roots,
            include_deleted=include_deleted,
            include_user=include_user,
            desc=desc,
            max_count=max_count,
        )
        return await self._view("/messages/cursor", MessagePage, "message page", as_user, params)

    # -- moderation (trusted keys) ---------------------------------------------------------------

    async def set_tree_halted(self, message_id: UUID | str, halt: bool = True) -> MessageTreeStateResponse:
        """``PUT /messages/{id}/tree/state?halt=``: stop the message's tree from growing, or resume it."""
        data = await self._call("PUT", f"/messages/{message_id}/tree/state", params=query(halt=halt))
        return self._parse(MessageTreeStateResponse, data, "tree state")

    async def delete_message(self, message_id: UUID | str) -> None:
        """``DELETE /messages/{id}``: soft-delete the message and everything below it."""
        await self._call("DELETE", f"/messages/{message_id}")

    async def undelete_message(self, message_id: UUID | str) -> None:
        """``PUT /messages/{id}/undelete``: restore the message and its ancestors."""
        await self._call("PUT", f"/messages/{message_id}/undelete")

    async def edit_message(self, message_id: UUID | str, user: User, new_content: str) -> Message:
        """``POST /messages/{id}/edit``: replace the text as ``user``; the old text stays a revision."""
        body = MessageEditRequest(user=user, new_content=new_content)
        data = await self._call("POST", f"/messages/{message_id}/edit", json=dump(body))
        return self._parse(Message, data, "message")

    async def message_history(
        self, message_id: UUID | str, *, as_user: User | None = None
    ) -> list[MessageRevision]:
        """``GET /messages/{id}/history``: the message's revisions, oldest first."""
        return await self._view(f"/messages/{message_id}/history", _REVISIONS_ADAPTER, "revisions", as_user)

    # -- reactions and labels --------------------------------------------------------------------

    async def post_emoji(
        self,
        message_id: UUID | str,
        user: User,
        emoji: EmojiCode | str,
        op: EmojiOp | str = EmojiOp.togggle,
    ) -> Message:
        """``POST /messages/{id}/emoji``: toggle (default), ``add`` or ``remove`` ``user``'s emoji; returns
        the message as ``user`` now sees it (``emojis`` counts, ``user_emojis``)."""
        body = MessageEmojiRequest(user=user, emoji=EmojiCode(emoji), op=EmojiOp(op))
        data = await self._call("POST", f"/messages/{message_id}/emoji", json=dump(body))
        return self._parse(Message, data, "message")

    async def post_text_labels(self, labels: TextLabels) -> None:
        """``POST /text_labels/``: a free label, a report (``is_report``), or a label task's answer."""
        await self._call("POST", "/text_labels/", json=dump(labels))

    async def valid_labels(self, message_id: UUID | str | None = None) -> ValidLabelsResponse:
        """``GET /text_labels/valid_labels``: the labels for the message's kind (all but fails_task without)."""
        data = await self._call("GET", "/text_labels/valid_labels", params=query(message_id=message_id))
        return self._parse(ValidLabelsResponse, data, "valid labels")

    async def report_labels(self) -> ValidLabelsResponse:
        """``GET /text_labels/report_labels``: the labels a report may carry."""
        data = await self._call("GET", "/text_labels/report_labels")
        return self._parse(ValidLabelsResponse, data, "report labels")

    # -- synthetic replies (trusted keys) ----------------------------------------------------------

    async def synthetic_candidates(
        self, *, lang: str | None = None, model_name: str | None = None, max_count: int | None = None
    ) -> list[SyntheticCandidate]:
        """``GET /messages/synthetic_candidates``: accepted prompter messages of growing trees with room
        for another assistant reply (none yet from ``model_name``), the fewest replies first."""
        params = query(lang=lang, model_name=model_name, max_count=max_count)
        data = await self._call("GET", "/messages/synthetic_candidates", params=params)
        return self._parse(_CANDIDATES_ADAPTER, data, "synthetic candidates")

    async def post_synthetic_reply(
        self, parent_id: UUID | str, text: str, model_name: str, *, lang: str | None = None
    ) -> Message:
        """``POST /messages/{id}/synthetic_reply``: insert a model's reply to a prompter message as a
        synthetic assistant message, to be reviewed and ranked like a volunteer's."""
        body = SyntheticReplyRequest(text=text, model_name=model_name, lang=lang)
        data = await self._call("POST", f"/messages/{parent_id}/synthetic_reply", json=dump(body))
        return self._parse(Message, data, "message")

    # -- plumbing --------------------------------------------------------------------------------

    async def _view(
        self,
        path: str,
        model: type[BaseModel] | TypeAdapter[Any],
        what: str,
        as_user: User | None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """A read that ``x-oasst-user`` enriches (``user_emojis``, ``user_is_author``)."""
        data = await self._call("GET", path, params=params, headers=user_header(as_user))
        return self._parse(model, data, what)
