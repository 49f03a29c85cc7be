"""Signed user tokens, hashed keys, root tokens, and workers refused at the door — each with its code."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from oasst.inference.protocol import PROTOCOL_VERSION
from oasst.inference.server.app import create_app
from oasst.inference.server.db import Database
from oasst.inference.server.errors import ErrorCode
from oasst.inference.server.models import ApiKey
from oasst.inference.server.settings import Settings
from oasst.inference.tokens import TokenError, mint_user_token, verify_user_token
from tests.inference.conftest import ROOT, SECRET, Keys, ScriptedWorker, bearer, user_headers, wait_for

ServerFactory = Callable[[Settings], AbstractContextManager[str]]


def test_user_tokens_are_signed_and_expire() -> None:
    token = mint_user_token(SECRET, "user-1", "Ada", ttl=60)
    claims = verify_user_token(SECRET, token)
    assert (claims.user_id, claims.display_name) == ("user-1", "Ada")
    with pytest.raises(TokenError) as forged:
        verify_user_token("another-secret-of-enough-length-000", token)
    assert forged.value.code == "token_invalid"
    with pytest.raises(TokenError) as tampered:
        verify_user_token(SECRET, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert tampered.value.code == "token_invalid"
    with pytest.raises(TokenError) as expired:
        verify_user_token(SECRET, token, now=time.time() + 61)
    assert expired.value.code == "token_expired"
    with pytest.raises(ValueError):
        mint_user_token(SECRET, "", "x")
    with pytest.raises(ValueError):
        mint_user_token(SECRET, "u", "x", ttl=0)


def test_the_website_module_needs_no_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, oasst.inference.tokens, oasst.inference.protocol; "
        "bad = [m for m in sys.modules if m.startswith(('oasst.inference.server', 'fastapi', 'sqlalchemy'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, ErrorCode.AUTH_MISSING),
        ({"Authorization": "Basic abc"}, 401, ErrorCode.AUTH_MISSING),
        ({"Authorization": "Bearer not-a-token"}, 401, ErrorCode.TOKEN_INVALID),
        (
            bearer(mint_user_token("a-different-secret-0123456789abcdef", "alice", "A")),
            401,
            ErrorCode.TOKEN_INVALID,
        ),
        (bearer(mint_user_token(SECRET, "alice", "A", ttl=0.001)), 401, ErrorCode.TOKEN_EXPIRED),
    ],
)
def test_chat_api_refuses_bad_tokens(
    client: TestClient, headers: dict[str, str], status: int, code: int
) -> None:
    time.sleep(0.01)
    r = client.get("/chats", headers=headers)
    assert r.status_code == status and r.json()["error_code"] == code, r.text


def test_keys_are_made_with_a_root_token_and_shown_once(client: TestClient) -> None:
    r = client.post("/admin/keys", json={"kind": "worker", "name": "gpu-1"}, headers=bearer("wrong"))
    assert r.status_code == 403 and r.json()["error_code"] == ErrorCode.ROOT_TOKEN_INVALID
    assert client.post("/admin/keys", json={"kind": "worker", "name": "gpu-1"}).status_code == 401
    assert (
        client.get("/admin/keys", headers=user_headers()).status_code == 403
    )  # a user token is no root token
    r = client.post("/admin/keys", json={"kind": "api", "name": "eval"}, headers=bearer(ROOT))
    assert r.status_code == 201
    created = r.json()
    assert created["key"].startswith("oia_") and created["kind"] == "api"
    listed = client.get("/admin/keys", headers=bearer(ROOT)).json()
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    assert client.get("/v1/models", headers=bearer(created["key"])).status_code == 200
    r = client.patch(f"/admin/keys/{created['id']}", json={"enabled": False}, headers=bearer(ROOT))
    assert r.json()["enabled"] is False
    r = client.get("/v1/models", headers=bearer(created["key"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_invalid"
    assert (
        client.post("/admin/keys", json={"kind": "root", "name": "x"}, headers=bearer(ROOT)).status_code
        == 422
    )


def test_a_key_disabled_by_another_process_stops_working_within_key_cache_s(
    settings: Settings, inf_db: Database, keys: Keys
) -> None:
    app = create_app(settings.model_copy(update={"key_cache_s": 0.5}), database=inf_db, migrate=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/models", headers=bearer(keys.api)).status_code == 200
        # another server process (or a script on the database) disables it: this one learns it in time
        inf_db.write(lambda s: s.execute(update(ApiKey).values(enabled=False)))
        assert client.get("/v1/models", headers=bearer(keys.api)).status_code == 200  # still trusted
        time.sleep(0.6)
        r = client.get("/v1/models", headers=bearer(keys.api))
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_invalid"
        assert client.get("/v1/models", headers=bearer("oia_wrong")).status_code == 401  # never cached


def test_workers_are_refused_with_a_reason(
    settings: Settings, server_factory: ServerFactory, keys: Keys
) -> None:
    with server_factory(settings) as url:
        for key, version, code, close in [
            ("oiw_wrong", PROTOCOL_VERSION, "key_invalid", 4401),
            (keys.api, PROTOCOL_VERSION, "key_wrong_kind", 4401),
            (keys.worker, PROTOCOL_VERSION + 1, "protocol_version_unsupported", 4426),
        ]:
            worker = ScriptedWorker(url, key, protocol_version=version).start(expect_refusal=True)
            wait_for(lambda w=worker: w.ended, what="the server to close the connection")
            assert worker.first_frame is not None and worker.first_frame["type"] == "refused"
            assert worker.first_frame["code"] == code and worker.close_code == close
