"""``/api/v1/tasks``: request → ack → interaction → done, nack, close, availability."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Query, Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from oasst.backend.api.deps import ApiClientDep, DatabaseDep, SettingsDep, TaskCachesDep, TaskServicesDep
from oasst.backend.errors import ErrorCode, OasstError
from oasst.backend.models import ApiClient
from oasst.backend.ratelimit import enforce
from oasst.backend.services import clients as clients_service
from oasst.backend.services import dispenser, interactions
from oasst.backend.settings import Settings
from oasst.protocol import common
from oasst.protocol import tasks as wire
from oasst.protocol.tasks import TaskRequestType as R
from oasst.ratelimit import Limit, RateLimiter

router = APIRouter()

# The hot endpoints return their JSON already serialised: FastAPI would otherwise re-validate the
# returned model against ``response_model`` (for a sync endpoint, in one more thread hop) before
# dumping it. The bytes are the same: both dump through a TypeAdapter of the response model.
_TASK_JSON: TypeAdapter[wire.Task] = TypeAdapter(wire.AnyTask)
_DONE_JSON = TypeAdapter(wire.TaskDone)


def _json(adapter: TypeAdapter[Any], value: Any) -> Response:
    return Response(adapter.dump_json(value, by_alias=True), media_type="application/json")


def _reply_limits(settings: Settings) -> dict[R, Limit]:
    rl = settings.rate_limits
    return {
        R.assistant_reply: Limit(rl.assistant_reply_requests, rl.assistant_reply_interval_sec),
        R.prompter_reply: Limit(rl.prompter_reply_requests, rl.prompter_reply_interval_sec),
    }


def _apply_rate_limits(
    limiter: RateLimiter, settings: Settings, client: ApiClient, request: wire.TaskRequest
) -> tuple[str, set[R]]:
    """Per-user and per-client request limits; returns the user key and the reply types out of budget."""
    rl = settings.rate_limits
    if request.user is None:
        if rl.enabled:
            enforce(
                limiter,
                f"client:{client.id}",
                Limit(rl.client_requests, rl.client_interval_sec),
                "task requests",
            )
        return "", set()
    key = f"user:{client.id}:{request.user.auth_method}:{request.user.id}"
    if not rl.enabled:
        return key, set()
    enforce(limiter, key, Limit(rl.user_requests, rl.user_interval_sec), "task requests")
    blocked = {
        t for t, limit in _reply_limits(settings).items() if limiter.exhausted(f"{key}:{t.value}", limit)
    }
    if request.type in blocked:
        enforce(
            limiter,
            f"{key}:{request.type.value}",
            _reply_limits(settings)[request.type],
            f"{request.type.value} tasks",
        )
    return key, blocked


@router.post("/", response_model=wire.AnyTask, summary="Request the next task for a user")
def request_task(body: wire.TaskRequest, client: ApiClientDep, services: TaskServicesDep) -> Response:
    settings, limiter, cache = services.settings, services.limiter, services.caches
    if body.user is None:
        raise OasstError("A task request needs a user.", ErrorCode.USER_NOT_SPECIFIED)
    key, blocked = _apply_rate_limits(limiter, settings, client, body)
    wire_user = body.user

    def work(session: Session) -> wire.Task:
        user = clients_service.resolve_worker(
            session, client, wire_user, cache=cache, enforce_tos=settings.enforce_tos_acceptance
        )
        return dispenser.next_task(
            session, settings=settings, client=client, user=user, request=body, blocked=blocked, caches=cache
        )

    task = services.database.write(work)
    if key and settings.rate_limits.enabled and task.type in (R.assistant_reply, R.prompter_reply):
        limiter.hit(f"{key}:{task.type}", _reply_limits(settings)[R(task.type)])
    return _json(_TASK_JSON, task)


@router.post("/availability", summary="How many tasks of each type a user could get now")
def task_availability(
    user: common.User,
    client: ApiClientDep,
    database: DatabaseDep,
    settings: SettingsDep,
    cache: TaskCachesDep,
    lang: Annotated[str, Query(max_length=32)] = "en",
) -> dict[R, int]:
    def work(session: Session) -> dict[R, int]:
        db_user = clients_service.resolve_worker(
            session, client, user, cache=cache, enforce_tos=settings.enforce_tos_acceptance
        )
        return dispenser.availability(session, settings=settings, user=db_user, lang=lang)

    return database.write(work)


@router.get("/{task_id}", response_model=wire.AnyTask, summary="A task handed out and still open (oasst)")
def get_task(task_id: UUID, client: ApiClientDep, database: DatabaseDep) -> Response:
    """Lets a frontend show a task again (a reloaded page) instead of holding two of them."""
    payload = database.read(lambda s: interactions.held_task(s, client, task_id))
    return _json(_TASK_JSON, _TASK_JSON.validate_python(payload))


@router.post("/{task_id}/ack", status_code=204, summary="Acknowledge a task with the frontend's message id")
def ack_task(task_id: UUID, body: wire.TaskAck, client: ApiClientDep, database: DatabaseDep) -> None:
    # a frontend id already bound to another task violates a unique index: the app maps that to 2000
    database.write(
        lambda s: interactions.ack_task(
            s, client=client, task_id=task_id, frontend_message_id=body.message_id
        )
    )


@router.post("/{task_id}/nack", status_code=204, summary="Skip a task, with an optional reason")
def nack_task(
    task_id: UUID,
    client: ApiClientDep,
    database: DatabaseDep,
    settings: SettingsDep,
    body: Annotated[wire.TaskNAck | None, Body()] = None,
) -> None:
    nack = body or wire.TaskNAck()
    database.write(
        lambda s: interactions.nack_task(
            s, settings=settings, client=client, task_id=task_id, reason=nack.reason, release=nack.release
        )
    )


@router.post("/close", status_code=204, summary="Close a collective task")
def close_task(body: wire.TaskClose, client: ApiClientDep, database: DatabaseDep) -> None:
    database.write(lambda s: interactions.close_task(s, client=client, frontend_message_id=body.message_id))


@router.post(
    "/interaction", response_model=wire.TaskDone, summary="Complete a task: reply, ranking or labels"
)
def post_interaction(
    body: Annotated[wire.AnyInteraction, Body()], client: ApiClientDep, services: TaskServicesDep
) -> Response:
    database, settings, cache = services.database, services.settings, services.caches
    if isinstance(body, wire.TextReplyToMessage):
        database.write(
            lambda s: interactions.handle_text_reply(
                s, client=client, settings=settings, body=body, cache=cache
            )
        )
    elif isinstance(body, wire.MessageRanking):
        database.write(
            lambda s: interactions.handle_ranking(s, client=client, settings=settings, body=body, cache=cache)
        )
    elif isinstance(body, wire.TextLabels):
        database.write(
            lambda s: interactions.handle_text_labels(
                s, client=client, settings=settings, body=body, cache=cache
            )
        )
    else:
        database.write(
            lambda s: interactions.handle_rating(s, client=client, settings=settings, body=body, cache=cache)
        )
    return _json(_DONE_JSON, wire.TaskDone())
