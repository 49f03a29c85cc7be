"""A test volunteer that works through the task protocol over HTTP, as a frontend would."""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

from fastapi.testclient import TestClient

_counter = itertools.count()


class Volunteer:
    def __init__(
        self, client: TestClient, name: str, *, lang: str = "en", auth_method: str = "local"
    ) -> None:
        self.client = client
        self.user = {"id": name, "display_name": name.title(), "auth_method": auth_method}
        self.lang = lang
        self.rng = random.Random(name)

    def accept_tos(self) -> None:
        response = self.client.post("/api/v1/frontend_users/", json={**self.user, "tos_acceptance": True})
        assert response.status_code == 200, response.text

    def request(self, task_type: str = "random") -> Any:
        return self.client.post(
            "/api/v1/tasks/", json={"type": task_type, "user": self.user, "lang": self.lang}
        )

    def ack(self, task_id: str) -> str:
        frontend_id = f"fe-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        response = self.client.post(f"/api/v1/tasks/{task_id}/ack", json={"message_id": frontend_id})
        assert response.status_code == 204, response.text
        return frontend_id

    def answer(self, task: dict[str, Any], frontend_id: str, *, accept: bool = True) -> Any:
        """Complete ``task`` with a valid interaction; returns the HTTP response."""
        kind = task["type"]
        if kind in ("initial_prompt", "prompter_reply", "assistant_reply"):
            body: dict[str, Any] = {
                "type": "text_reply_to_message",
                "message_id": frontend_id,
                "user_message_id": f"msg-{frontend_id}",
                "text": f"{kind} by {self.user['id']} #{next(_counter)}: {uuid.uuid4().hex}",
                "lang": self.lang,
            }
        elif kind.startswith("rank_"):
            order = list(range(len(task["reply_messages"])))
            self.rng.shuffle(order)
            body = {"type": "message_ranking", "message_id": frontend_id, "ranking": order}
        elif kind.startswith("label_"):
            labels = {name: self.rng.random() for name in task["valid_labels"]}
            labels["spam"] = 0.0 if accept else 1.0
            if "lang_mismatch" in labels:
                labels["lang_mismatch"] = 0.0
            body = {
                "type": "text_labels",
                "message_id": task["message_id"],
                "task_id": task["id"],
                "labels": labels,
                "text": "",
            }
        else:
            raise AssertionError(f"unexpected task type {kind}")
        return self.client.post("/api/v1/tasks/interaction", json={**body, "user": self.user})

    def work_once(self, task_type: str = "random", *, accept: bool = True) -> dict[str, Any] | None:
        """Request, ack and complete one task; None when nothing is available."""
        response = self.request(task_type)
        if response.status_code == 503 and response.json()["error_code"] == 1006:
            return None
        assert response.status_code == 200, response.text
        task = response.json()
        frontend_id = self.ack(task["id"])
        done = self.answer(task, frontend_id, accept=accept)
        assert done.status_code == 200, done.text
        return task
