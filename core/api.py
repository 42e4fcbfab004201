"""What every endpoint shares: one error shape, JSON-object bodies only, and the errors in the schema.

The project's `NinjaAPI` is a `CompanionAPI`: its parser refuses a body that is not JSON (415)
or not a JSON object (422), and its OpenAPI document lists, for every operation, the errors
any endpoint of its kind can give (401 behind a token, 404 where a path names an id, 400, 413,
415 and 422 where it reads a body or parameters), so an endpoint added later inherits them.
Errors particular to one endpoint (409, 429) it declares itself with `response={...: ErrorOut}`.
"""

import json
import re
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import NinjaAPI, Schema
from ninja.openapi.schema import OpenAPISchema
from ninja.parser import Parser
from pydantic import Field

from core.errors import DomainError, InvalidInput

ERROR_SCHEMA_NAME = "ErrorOut"
MAX_ID = 2**63 - 1  # the database's bigint: a larger number would be a 500, not a 404

# An object's id, in a path or a body: bounded, so the schema says so and the database never sees more.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
JSON_MEDIA_TYPE = "application/json"


class ErrorOut(Schema):
    """Every error, whatever the endpoint: a sentence for people, a stable code for programs."""

    detail: str = Field(description="What went wrong, as a sentence to show a person.")
    code: str = Field(description="Stable, for programs to switch on: `invalid`, `not_found`, `busy`, ...")
    field: str | None = Field(default=None, description="The first field at fault (dotted for nested fields), or null.")
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description="On a 422 for a request that does not match the schema: every pydantic error, "
        "each naming its place in `loc`.",
    )


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    status_code = 415


class MalformedBody(DomainError):
    code = "malformed"
    status_code = 400


def validation_error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """A 422 body from ninja's list of pydantic errors: the first one in words, all of them kept."""
    if not errors:
        return {"detail": "The request is invalid.", "code": "invalid", "field": None, "errors": []}
    first = errors[0]
    field = error_field(first.get("loc", ()))
    message = str(first.get("msg", "is invalid"))
    detail = f"{field}: {message}" if field else message
    return {"detail": detail, "code": "invalid", "field": field, "errors": errors}


def error_field(loc: Any) -> str | None:
    """`["body", "payload", "profile", "name"]` -> `profile.name`; `["query", "limit"]` -> `limit`."""
    parts = [str(part) for part in loc]
    if not parts:
        return None
    # A body's errors carry the view's parameter name after "body"; a client never sees that name.
    parts = parts[2:] if parts[0] == "body" else parts[1:]
    # pydantic also names the member of a union it tried (`str-enum[Mode]`, `int`, `QuietHours`): not a field.
    return ".".join(part for part in parts if _FIELD_PART.match(part) and part not in _TYPE_TAGS) or None


_FIELD_PART = re.compile(r"^([a-z_][a-z0-9_]*|\d+)$")
_TYPE_TAGS = frozenset({"int", "str", "float", "bool", "none", "list", "dict", "tuple", "set", "bytes", "decimal"})


class JsonObjectParser(Parser):
    """Bodies are JSON objects: another declared media type is a 415, another JSON value a 422.

    ninja wraps any exception raised here in a 400 `HttpError`; the API's handler for it
    unwraps a `DomainError` cause and answers with that instead. A request that declares no
    media type is read as JSON, as curl users and ninja's own test client expect.
    """

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        content_type = getattr(request, "content_type", None) or ""
        if content_type and content_type != JSON_MEDIA_TYPE and not content_type.endswith("+json"):
            raise UnsupportedMediaType(f"Send the body as {JSON_MEDIA_TYPE}, not {content_type}.")
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError) as exc:
            raise MalformedBody("The request body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise InvalidInput(f"The request body must be a JSON object, not {_json_kind(data)}.")
        return data


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


_ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body is not valid JSON (`malformed`).",
    401: "No valid access token (`unauthorized`).",
    404: "No such object, or another user's (`not_found`).",
    413: "The request body is too large (`too_large`).",
    415: "The body is not sent as application/json (`unsupported_media_type`).",
    422: "The request does not match the schema or breaks a business rule (`invalid` or a specific code).",
}


def openapi_errors_add(schema: dict[str, Any]) -> None:
    """Add to every operation the error responses its kind can give, in the one error schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if ERROR_SCHEMA_NAME not in components:
        components[ERROR_SCHEMA_NAME] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    error_content = {JSON_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            statuses = set()
            if operation.get("security"):
                statuses.add(401)
            if "{" in path or _body_names_an_id(operation, components):
                statuses.add(404)
            if operation.get("parameters") or "requestBody" in operation:
                statuses.add(422)
            if "requestBody" in operation:
                statuses |= {400, 413, 415}
            _null_body_drop(operation)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(status, {"description": _ERROR_DESCRIPTIONS[status], "content": error_content})


def _null_body_drop(operation: dict[str, Any]) -> None:
    # An optional body (`payload: X | None = None`) reads as "object or null"; the parser refuses null.
    schema = operation.get("requestBody", {}).get("content", {}).get(JSON_MEDIA_TYPE, {}).get("schema", {})
    if "anyOf" in schema:
        schema["anyOf"] = [member for member in schema["anyOf"] if member != {"type": "null"}]


def _body_names_an_id(operation: dict[str, Any], components: dict[str, Any]) -> bool:
    """Whether the JSON body has an `..._id` field: an object it names may not exist (or be another user's)."""
    content = operation.get("requestBody", {}).get("content", {}).get(JSON_MEDIA_TYPE, {})
    schema = content.get("schema", {})
    for member in [schema, *schema.get("anyOf", [])]:
        ref = member.get("$ref", "")
        properties = components.get(ref.rpartition("/")[2], {}).get("properties", {}) if ref else {}
        if any(name.endswith("_id") for name in {**member.get("properties", {}), **properties}):
            return True
    return False


class CompanionAPI(NinjaAPI):
    """The project's NinjaAPI: JSON-object bodies and errors documented on every operation."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("parser", JsonObjectParser())
        super().__init__(**kwargs)

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        openapi_errors_add(schema)
        return schema
