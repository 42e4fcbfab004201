"""The accounts endpoints as the OpenAPI document describes them to client authors."""

from django.test import Client


def test_openapi_lists_the_accounts_endpoints_and_their_auth(client: Client) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]

    operations = {
        (path, method): operation
        for path, methods in paths.items()
        if path.startswith("/api/auth/") or path in {"/api/me", "/api/me/export"}
        for method, operation in methods.items()
    }
    assert sorted(operations) == [
        ("/api/auth/logout", "post"),
        ("/api/auth/password", "post"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/register", "post"),
        ("/api/auth/token", "post"),
        ("/api/me", "delete"),
        ("/api/me", "get"),
        ("/api/me", "patch"),
        ("/api/me/export", "get"),
    ]
    # only the profile, its export and erasure, and a password change need a bearer token
    assert {key for key, operation in operations.items() if operation.get("security")} == {
        ("/api/auth/password", "post"),
        ("/api/me", "delete"),
        ("/api/me", "get"),
        ("/api/me", "patch"),
        ("/api/me/export", "get"),
    }
    assert "201" in operations[("/api/auth/register", "post")]["responses"]
    assert "204" in operations[("/api/auth/logout", "post")]["responses"]
