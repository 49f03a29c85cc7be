"""Handing out the next task: ``next_task(session, ...)`` and ``availability(session, ...)``.

The task type of a ``random`` request is drawn with the original's weights (ranking 10, label reply 5,
label prompt 5, reply 2, initial prompt 0.01) among the types that have work for this user. Instead of
running every candidate query up front, types are drawn in a weighted random order and queried lazily
until one has work; the first available type of such an order has exactly the original's distribution.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any, TypeVar

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from oasst.backend.db import try_lock_tree
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient, Message, Task, utcnow
from oasst.backend.services import candidates as cq
from oasst.backend.services import tree_manager
from oasst.backend.services.clients import TaskCaches, Worker
from oasst.backend.services.conversations import (
    conversation_message,
    conversation_of,
    load_tree_for_reader,
    path_in,
)
from oasst.backend.settings import Settings, TreeManagerConfiguration
from oasst.protocol import tasks as wire
from oasst.protocol.common import describe_label
from oasst.protocol.tasks import TaskRequestType as R

# the original drew "reply" and "label_reply" without a role; oasst keeps those as role-free kinds
KIND_OF: dict[R, str] = {
    R.initial_prompt: "prompt",
    R.prompter_reply: "reply",
    R.assistant_reply: "reply",
    R.label_initial_prompt: "label_prompt",
    R.label_prompter_reply: "label_reply",
    R.label_assistant_reply: "label_reply",
    R.rank_prompter_replies: "ranking",
    R.rank_assistant_replies: "ranking",
}
RANDOM_KIND_WEIGHTS = {"ranking": 10.0, "label_reply": 5.0, "label_prompt": 5.0, "reply": 2.0, "prompt": 0.01}
NEVER_GENERATED = {R.summarize_story, R.rate_summary, R.rank_initial_prompts}
RETRIES_PER_KIND = 3
C = TypeVar("C")
TaskRow = dict[str, Any]  # the values of the task's row, inserted once the task is chosen


def _plackett_luce(weights: dict[str, float]) -> list[str]:
    """A weighted random order: P(kind first among any subset) = weight / subset's total weight."""
    keys = [k for k, w in weights.items() if w > 0]
    return sorted(keys, key=lambda k: random.expovariate(weights[k]))


class Dispatch:
    """One task request: the user, the language, and the settings it runs under."""

    def __init__(
        self, session: Session, *, settings: Settings, user: Worker, lang: str, blocked: set[R]
    ) -> None:
        self.session = session
        self.settings = settings
        self.cfg: TreeManagerConfiguration = settings.tree_manager
        self.user = user
        self.lang = lang
        self.blocked = blocked
        self.holds_tree_lock = False
        now = utcnow()
        self.scope = cq.Scope(
            user_id=user.id, lang=lang, recent_since=now - timedelta(seconds=self.cfg.recent_tasks_span_sec)
        )

    def _claim(
        self, candidates: list[C], tree_of: Callable[[C], uuid.UUID], still_open: Callable[[C], bool]
    ) -> C | None:
        """Lock the tree of the first candidate that is still open, and return that candidate.

        Trees locked by another transaction are skipped rather than waited for, so volunteers spread
        over trees instead of queueing on one. Only a dispatch that holds no tree lock yet may wait
        (on its last try): dispatches therefore never wait on each other in a cycle (no deadlocks).
        """
        tries = random.sample(candidates, min(len(candidates), RETRIES_PER_KIND))
        for i, candidate in enumerate(tries):
            wait = i == len(tries) - 1 and not self.holds_tree_lock
            if not try_lock_tree(self.session, tree_of(candidate), skip_locked=not wait):
                continue
            self.holds_tree_lock = True
            if still_open(candidate):  # re-check under the lock: the slot may have been taken meanwhile
                return candidate
        return None

    # --- candidate pickers: each returns a built task (and its targets) or None ---

    def pick(
        self, request: R, kind: str, missing_prompts: int, from_random: bool
    ) -> tuple[wire.Task, TaskRow] | None:
        builders: dict[str, Callable[[], tuple[wire.Task, TaskRow] | None]] = {
            "prompt": lambda: self._initial_prompt() if missing_prompts > 0 else None,
            "reply": lambda: self._reply(request),
            "label_prompt": lambda: self._label(roots=True, from_random=from_random),
            "label_reply": lambda: self._label(roots=False, from_random=from_random, request=request),
            "ranking": lambda: self._ranking(request),
        }
        return builders[kind]()

    def _row(self, task: wire.Task, *, tree_id: uuid.UUID | None, target: uuid.UUID | None) -> TaskRow:
        return {
            "id": task.id,
            "user_id": self.user.id,
            "task_type": task.type,
            "payload": task.model_dump(mode="json"),
            "message_tree_id": tree_id,
            "parent_message_id": target,
        }

    def _initial_prompt(self) -> tuple[wire.Task, TaskRow]:
        task = wire.InitialPromptTask()
        return task, self._row(task, tree_id=None, target=None)

    def _reply(self, request: R) -> tuple[wire.Task, TaskRow] | None:
        found = _with_role(
            cq.extendible_parents(self.session, self.scope, self.cfg), request, lambda c: c.role
        )
        lonely = [
            c
            for c in found
            if c.role == "prompter" and 0 < c.active_children < self.cfg.lonely_children_count
        ]
        if (
            lonely
            and self.cfg.lonely_children_count > 1
            and random.random() < self.cfg.p_lonely_child_extension
        ):
            found = lonely
        claimed = self._claim(
            found,
            lambda c: c.tree_id,
            lambda c: bool(
                cq.extendible_parents(self.session, self.scope, self.cfg, parent_ids=[c.parent_id])
            ),
        )
        for candidate in [claimed] if claimed else []:
            tree, emojis = load_tree_for_reader(self.session, candidate.tree_id, self.user.id)
            thread = path_in(tree, candidate.parent_id)
            parent = thread[-1]
            conversation = conversation_of(self.session, thread, reader_id=self.user.id, emojis=emojis)
            task: wire.Task
            if parent.role == "assistant":
                task = wire.PrompterReplyTask(conversation=conversation)
            else:
                task = wire.AssistantReplyTask(conversation=conversation)
            return task, self._row(task, tree_id=parent.message_tree_id, target=parent.id)
        return None

    def _label(
        self, *, roots: bool, from_random: bool, request: R | None = None
    ) -> tuple[wire.Task, TaskRow] | None:
        found = cq.messages_needing_review(self.session, self.scope, self.cfg, roots=roots)
        if request is not None:
            found = _with_role(found, request, lambda c: c.role)
        claimed = self._claim(
            found,
            lambda c: c.tree_id,
            lambda c: bool(
                cq.messages_needing_review(
                    self.session, self.scope, self.cfg, roots=roots, message_ids=[c.message_id]
                )
            ),
        )
        for candidate in [claimed] if claimed else []:
            tree, emojis = load_tree_for_reader(self.session, candidate.tree_id, self.user.id)
            thread = path_in(tree, candidate.message_id)
            task = self._label_task(thread, emojis, from_random=from_random)
            return task, self._row(task, tree_id=candidate.tree_id, target=candidate.message_id)
        return None

    def _label_task(
        self, thread: list[Message], emojis: dict[uuid.UUID, list[str]], *, from_random: bool
    ) -> wire.Task:
        cfg = self.cfg
        message = thread[-1]
        conversation = conversation_of(self.session, thread, reader_id=self.user.id, emojis=emojis)
        if message.parent_id is None:
            valid, mandatory, p_full = (
                cfg.labels_initial_prompt,
                cfg.mandatory_labels_initial_prompt,
                cfg.p_full_labeling_review_prompt,
            )
            simple_extra = ["lang_mismatch"]
        elif message.role == "assistant":
            valid, mandatory, p_full = (
                cfg.labels_assistant_reply,
                cfg.mandatory_labels_assistant_reply,
                cfg.p_full_labeling_review_reply_assistant,
            )
            simple_extra = ["lang_mismatch", "quality"]
        else:
            valid, mandatory, p_full = (
                cfg.labels_prompter_reply,
                cfg.mandatory_labels_prompter_reply,
                cfg.p_full_labeling_review_reply_prompter,
            )
            simple_extra = ["lang_mismatch", "quality"]
        # prompts may get simple mode on any request; replies only on random ones (as the original)
        simple = random.random() >= p_full and (message.parent_id is None or from_random)
        mode = wire.LabelTaskMode.simple if simple else wire.LabelTaskMode.full
        disposition = wire.LabelTaskDisposition.spam if simple else wire.LabelTaskDisposition.quality
        labels = list(dict.fromkeys([*mandatory, *simple_extra])) if simple else list(valid)
        common = {
            "message_id": message.id,
            "valid_labels": labels,
            "mandatory_labels": list(mandatory),
            "mode": mode,
            "disposition": disposition,
            "labels": [describe_label(name) for name in labels],
            "conversation": conversation,
        }
        if message.parent_id is None:
            return wire.LabelInitialPromptTask(**common, prompt=message.text)
        if message.role == "assistant":
            return wire.LabelAssistantReplyTask(**common, reply=message.text)
        return wire.LabelPrompterReplyTask(**common, reply=message.text)

    def _ranking(self, request: R) -> tuple[wire.Task, TaskRow] | None:
        found = _with_role(
            cq.incomplete_rankings(self.session, self.scope, self.cfg), request, lambda c: c.parent_role
        )
        claimed = self._claim(
            found,
            lambda c: c.tree_id,
            lambda c: bool(
                cq.incomplete_rankings(self.session, self.scope, self.cfg, parent_ids=[c.parent_id])
            ),
        )
        return self._ranking_task(claimed.tree_id, claimed.parent_id) if claimed else None

    def _ranking_task(self, tree_id: uuid.UUID, parent_id: uuid.UUID) -> tuple[wire.Task, TaskRow]:
        tree, emojis = load_tree_for_reader(self.session, tree_id, self.user.id)
        thread = path_in(tree, parent_id)
        parent = thread[-1]
        roles = tree_manager.ranked_roles(self.cfg)
        replies = [
            m
            for m in tree.values()
            if m.parent_id == parent_id and not m.deleted and m.review_result and m.role in roles
        ]
        random.shuffle(replies)
        reveal = all(r.synthetic for r in replies)
        conversation = conversation_of(self.session, thread, reader_id=self.user.id, emojis=emojis)
        reply_messages = [conversation_message(r, hide_synthetic=not reveal) for r in replies]
        cls = wire.RankPrompterRepliesTask if parent.role == "assistant" else wire.RankAssistantRepliesTask
        task = cls(
            conversation=conversation,
            replies=[r.text for r in replies],
            reply_messages=reply_messages,
            message_tree_id=tree_id,
            ranking_parent_id=parent_id,
            reveal_synthetic=reveal,
        )
        return task, self._row(task, tree_id=tree_id, target=parent_id)


# The role a candidate's target message must have for a typed request: a parent to reply to, a message
# to label, or a parent whose replies are ranked. Untyped requests (random) take any.
TARGET_ROLE: dict[R, str] = {
    R.assistant_reply: "prompter",
    R.prompter_reply: "assistant",
    R.label_assistant_reply: "assistant",
    R.label_prompter_reply: "prompter",
    R.rank_assistant_replies: "prompter",
    R.rank_prompter_replies: "assistant",
}


def _with_role(candidates: list[C], request: R, role_of: Callable[[C], str]) -> list[C]:
    role = TARGET_ROLE.get(request)
    return candidates if role is None else [c for c in candidates if role_of(c) == role]


def _lottery(session: Session, lang: str, cfg: TreeManagerConfiguration, caches: TaskCaches | None) -> int:
    """Run the prompt lottery (cached for a second per language); returns initial prompts available."""
    if lang in cfg.init_prompt_disabled_langs_list:
        return 0
    cached = caches.lottery.get(lang) if caches is not None else None
    if cached is not None:
        return int(cached)
    available = tree_manager.prompt_lottery(session, lang, cfg, max_activate=2)
    if caches is not None:
        caches.lottery.put(lang, available)
    return available


@functools.cache
def _insert_task_stmt() -> Any:
    return insert(Task)


@functools.cache
def _pending_stmt() -> Any:
    return select(func.count()).where(
        Task.user_id == cq.USER,
        Task.done.is_(False),
        Task.skipped.is_(False),
        Task.collective.is_(False),
        Task.created_date >= cq.SINCE,
    )


def _check_pending(session: Session, user: Worker, cfg: TreeManagerConfiguration) -> None:
    since = utcnow() - timedelta(seconds=cfg.recent_tasks_span_sec)
    pending = session.connection().execute(_pending_stmt(), {"user_id": user.id, "since": since}).scalar()
    if (pending or 0) >= cfg.max_pending_tasks_per_user:
        raise OasstError(
            f"The user has {pending} unfinished tasks: complete or skip (nack) some before asking for more.",
            ErrorCode.TASK_TOO_MANY_PENDING,
            HTTPStatus.TOO_MANY_REQUESTS,
        )


def next_task(
    session: Session,
    *,
    settings: Settings,
    client: ApiClient,
    user: Worker,
    request: wire.TaskRequest,
    blocked: set[R] | None = None,
    caches: TaskCaches | None = None,
) -> wire.Task:
    """Choose, build and store the next task for ``user``; raise 1006 when nothing fits."""
    cfg = settings.tree_manager
    lang = request.lang or "en"
    if request.type in NEVER_GENERATED:
        raise _not_available(request.type)
    missing_prompts = _lottery(session, lang, cfg, caches)
    _check_pending(session, user, cfg)
    dispatch = Dispatch(session, settings=settings, user=user, lang=lang, blocked=blocked or set())
    if request.type == R.random:
        weights = dict(RANDOM_KIND_WEIGHTS)
        if R.assistant_reply in dispatch.blocked or R.prompter_reply in dispatch.blocked:
            weights.pop("reply")
        order = [(R.random, kind) for kind in _plackett_luce(weights)]
    else:
        if request.type in dispatch.blocked:
            raise _not_available(request.type)
        order = [(request.type, KIND_OF[request.type])]
    for requested, kind in order:
        built = dispatch.pick(requested, kind, missing_prompts, from_random=request.type == R.random)
        if built is None:
            continue
        task, row = built
        row["api_client_id"] = client.id
        row["collective"] = request.collective
        row["expiry_date"] = (
            None if request.collective else utcnow() + timedelta(minutes=settings.task_validity_minutes)
        )
        # a Core insert: an ORM object and its flush would cost several times the statement itself
        session.connection().execute(_insert_task_stmt(), row)
        return task
    raise _not_available(request.type)


def _not_available(request_type: R) -> OasstError:
    return OasstError(
        f"No task of type '{request_type.value}' is available right now; try another type or later.",
        ErrorCode.TASK_REQUESTED_TYPE_NOT_AVAILABLE,
        HTTPStatus.SERVICE_UNAVAILABLE,
    )


def availability(session: Session, *, settings: Settings, user: Worker, lang: str) -> dict[R, int]:
    """How many tasks of each type this user could get now (``random`` is the sum)."""
    cfg = settings.tree_manager
    missing_prompts = 0
    if lang not in cfg.init_prompt_disabled_langs_list:
        missing_prompts = tree_manager.prompt_lottery(session, lang, cfg, max_activate=1)
    scope = Dispatch(session, settings=settings, user=user, lang=lang, blocked=set()).scope
    review_prompts = len(cq.messages_needing_review(session, scope, cfg, roots=True, limit=10_000))
    review_replies = cq.messages_needing_review(session, scope, cfg, roots=False, limit=10_000)
    parents = cq.extendible_parents(session, scope, cfg, limit=10_000)
    rankings = cq.incomplete_rankings(session, scope, cfg, limit=10_000)
    counts = {t: 0 for t in R}
    counts[R.initial_prompt] = missing_prompts
    counts[R.label_initial_prompt] = review_prompts
    counts[R.label_assistant_reply] = sum(1 for r in review_replies if r.role == "assistant")
    counts[R.label_prompter_reply] = sum(1 for r in review_replies if r.role == "prompter")
    counts[R.assistant_reply] = sum(1 for p in parents if p.role == "prompter")
    counts[R.prompter_reply] = sum(1 for p in parents if p.role == "assistant")
    counts[R.rank_assistant_replies] = sum(1 for r in rankings if r.parent_role == "prompter")
    counts[R.rank_prompter_replies] = sum(1 for r in rankings if r.parent_role == "assistant")
    counts[R.random] = sum(v for k, v in counts.items() if k != R.random)
    return counts
