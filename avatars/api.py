"""Avatar endpoints, mounted at /api/avatars. Thin: parse, call one selector or service, serialise."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from ninja import Router, Status

from accounts.auth import request_user
from avatars import selectors, services
from avatars.cards import card_read_upload
from avatars.errors import CardMissingFile, CardTooLarge, CardUnsupportedMediaType
from avatars.models import Avatar
from avatars.schemas import AvatarIn, AvatarOut, AvatarPatchIn
from core.api import ErrorOut, Id

router = Router(tags=["avatars"])

# Room for the multipart envelope around a card file of the largest allowed size.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

IMPORT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "A character card V1, V2 or V3, as JSON."}
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                },
                "encoding": {"file": {"contentType": "image/png, application/json"}},
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.get("", response=list[AvatarOut])
def avatar_list(request: HttpRequest, q: str | None = None, tag: str | None = None) -> list[Avatar]:
    return list(selectors.avatar_list_visible(user=request_user(request), q=q, tag=tag))


@router.post("", response={201: AvatarOut, 409: ErrorOut})
def avatar_create(request: HttpRequest, payload: AvatarIn) -> Status[Avatar]:
    avatar = services.avatar_create(user=request_user(request), data=payload.model_dump())
    return Status(201, avatar)


@router.post("/import", response={201: AvatarOut}, openapi_extra=IMPORT_OPENAPI)
def avatar_import(request: HttpRequest) -> Status[Avatar]:
    """Create an avatar of your own from a character card.

    Send the card as the JSON body, as a PNG body, or as a multipart upload in the field
    `file` (a PNG card or a JSON file). Errors name the problem: `card_too_large` (413),
    `card_not_json`, `card_unknown_spec`, `card_missing_field`, `card_invalid_field`,
    `card_bad_base64`, `png_no_card_chunk`, `png_invalid`, `png_too_large`, `card_missing_file`,
    `card_unsupported_media_type` (415).
    """
    avatar = services.avatar_import_card(user=request_user(request), content=_card_bytes(request))
    return Status(201, avatar)


@router.get("/{avatar_id}", response=AvatarOut)
def avatar_detail(request: HttpRequest, avatar_id: Id) -> Avatar:
    return selectors.avatar_get_visible(user=request_user(request), avatar_id=avatar_id)


@router.patch("/{avatar_id}", response={200: AvatarOut, 403: ErrorOut})
def avatar_update(request: HttpRequest, avatar_id: Id, payload: AvatarPatchIn) -> Avatar:
    avatar = selectors.avatar_get_owned(user=request_user(request), avatar_id=avatar_id)
    return services.avatar_update(
        avatar=avatar, user=request_user(request), data=payload.model_dump(exclude_unset=True)
    )


@router.delete("/{avatar_id}", response={204: None, 403: ErrorOut})
def avatar_delete(request: HttpRequest, avatar_id: Id) -> Status[None]:
    avatar = selectors.avatar_get_owned(user=request_user(request), avatar_id=avatar_id)
    services.avatar_delete(avatar=avatar)
    return Status(204, None)


def _card_bytes(request: HttpRequest) -> bytes:
    limit = settings.CARD_MAX_BYTES
    content_type = request.content_type or ""
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if content_type == "multipart/form-data":
        if declared > limit + MULTIPART_OVERHEAD_BYTES:
            raise CardTooLarge(f"The upload is {declared} bytes; a card may be at most {limit} bytes.")
        upload = request.FILES.get("file")
        if upload is None:
            raise CardMissingFile("Upload the card in the multipart field `file`.", field="file")
        return card_read_upload(upload, max_bytes=limit)
    if content_type in {"application/json", "image/png", "application/octet-stream"}:
        if declared > limit:
            raise CardTooLarge(f"The card is {declared} bytes; the limit is {limit} bytes.")
        try:
            return request.body
        except RequestDataTooBig as exc:
            raise CardTooLarge(f"A card may be at most {limit} bytes.") from exc
    raise CardUnsupportedMediaType(
        "Send the card as application/json, image/png, or multipart/form-data with a `file` field."
    )
