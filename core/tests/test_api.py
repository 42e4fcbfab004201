"""What every endpoint shares (core.api): one error shape, JSON-object bodies, errors in the schema."""

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from conversations.models import Conversation
from core.api import error_field, validation_error_body
from testing.support import ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db

Headers = Callable[[User], dict[str, str]]
ERROR_KEYS = {"detail", "code", "field"}


def _operations(client: Client) -> list[tuple[str, str, dict[str, Any]]]:
    paths = client.get("/api/openapi.json").json()["paths"]
    return [(path, method, operation) for path, methods in paths.items() for method, operation in methods.items()]


def _body_operations() -> list[tuple[str, str]]:
    # Built from the schema itself, so an endpoint added later is covered without editing this file.
    from companion.api import api

    schema = api.get_openapi_schema()
    return [
        (path, method)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
        if "requestBody" in operation
    ]


def _url(path: str) -> str:
    """The path with every `{..._id}` set to 1: the body is read before any object is looked up."""
    return re.sub(r"\{[^}]+\}", "1", path)


def test_the_conversation_patch_with_a_string_body_is_a_422_and_changes_nothing(
    client: Client, bearer_for: Headers
) -> None:
    conversation = ConversationFactory(mode="secretary", mode_locked=False)

    response = client.patch(
        f"/api/conversations/{conversation.pk}",
        data='"abc"',
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 422
    assert response.json() == {
        "detail": "The request body must be a JSON object, not a string.",
        "code": "invalid",
        "field": None,
    }
    conversation.refresh_from_db()
    assert (conversation.mode, conversation.mode_locked) == ("secretary", False)


@pytest.mark.parametrize(("path", "method"), _body_operations())
@pytest.mark.parametrize("body", ['"abc"', "[1, 2]", "42", "null", "true"])
def test_every_body_that_is_not_a_json_object_is_refused(
    client: Client, bearer_for: Headers, path: str, method: str, body: str
) -> None:
    user = UserFactory()
    response = getattr(client, method)(_url(path), data=body, content_type="application/json", headers=bearer_for(user))

    # The character-card import reads its body itself (JSON, PNG or multipart) and names its own error.
    assert response.status_code in {400, 422}, (path, method, response.content)
    assert set(response.json()) >= ERROR_KEYS
    assert isinstance(response.json()["detail"], str)
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(("path", "method"), _body_operations())
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_every_json_endpoint_refuses_another_media_type_with_415(
    client: Client, bearer_for: Headers, path: str, method: str, content_type: str
) -> None:
    user = UserFactory()
    response = getattr(client, method)(_url(path), data='{"a": 1}', content_type=content_type, headers=bearer_for(user))

    assert response.status_code == 415, (path, method, response.content)
    assert response.json()["code"] in {"unsupported_media_type", "card_unsupported_media_type"}


def test_a_body_without_a_declared_media_type_is_read_as_json(client: Client, bearer_for: Headers) -> None:
    conversation = ConversationFactory(mode_locked=False)

    response = client.generic(
        "PATCH",
        f"/api/conversations/{conversation.pk}",
        data=json.dumps({"mode_locked": True}),
        content_type="",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.mode_locked is True


def test_a_validation_error_is_one_sentence_naming_the_field_with_every_error_kept(
    client: Client, bearer_for: Headers
) -> None:
    conversation = ConversationFactory()

    response = client.patch(
        f"/api/conversations/{conversation.pk}",
        data=json.dumps({"mode": "party", "mode_locked": "maybe"}),
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid", "mode")
    assert body["detail"].startswith("mode: ")
    assert {tuple(error["loc"][:3]) for error in body["errors"]} == {
        ("body", "payload", "mode"),
        ("body", "payload", "mode_locked"),
    }


def test_a_query_error_names_the_parameter(client: Client, bearer_for: Headers) -> None:
    response = client.get("/api/conversations?limit=0", headers=bearer_for(UserFactory()))

    assert (response.status_code, response.json()["field"], response.json()["code"]) == (422, "limit", "invalid")


def test_error_field_drops_the_source_and_the_view_parameter_name() -> None:
    assert error_field(["body", "payload", "quiet_hours", "start"]) == "quiet_hours.start"
    assert error_field(["query", "limit"]) == "limit"
    assert error_field(["path", "conversation_id"]) == "conversation_id"
    assert error_field(["body", "payload"]) is None
    assert error_field(["body", "payload", "mode", "str-enum[Mode]"]) == "mode"
    assert error_field(["body", "payload", "tags", 2, "str"]) == "tags.2"
    assert validation_error_body([]) == {
        "detail": "The request is invalid.",
        "code": "invalid",
        "field": None,
        "errors": [],
    }


def test_every_operation_documents_the_errors_of_its_kind_in_the_one_error_schema(client: Client) -> None:
    missing = []
    for path, method, operation in _operations(client):
        expected = set()
        if operation.get("security"):
            expected.add("401")
        if "{" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"400", "413", "415", "422"}
        if operation.get("parameters"):
            expected.add("422")
        responses = operation["responses"]
        missing += [(method, path, status) for status in expected if status not in responses]
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)

    assert missing == []


def test_the_error_schema_has_the_one_shape(client: Client) -> None:
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["ErrorOut"]

    assert set(schema["properties"]) == {"detail", "code", "field", "errors"}
    assert schema["properties"]["detail"]["type"] == "string"
    assert schema["required"] == ["detail", "code"]
