"""The app starts on both databases and speaks the original's error format."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_health(app_client: TestClient) -> None:
    assert app_client.get("/health").json()["status"] == "ok"


def test_unknown_route_has_error_body(app_client: TestClient) -> None:
    response = app_client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error_code"] == 103


def test_openapi_spec_is_served(app_client: TestClient) -> None:
    spec = app_client.get("/api/v1/openapi.json").json()
    assert spec["info"]["title"] == "oasst backend"
