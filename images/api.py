"""Pictures over REST: a portrait asked for, a picture read, its file served (only to who may see it)."""

from typing import Any

from django.http import FileResponse, HttpRequest
from ninja import Router, Status

from accounts.auth import request_user
from avatars.selectors import avatar_get_owned
from core.api import ErrorOut, Id
from core.errors import NotFound
from images import selectors, services
from images.encode import CONTENT_TYPE
from images.models import ImageStatus
from images.schemas import ImageOut, PortraitIn, PortraitOut
from images.storage import picture_open

router = Router(tags=["images"])

FILE_OPENAPI = {
    "responses": {
        200: {
            "description": "The picture (WEBP): to its owner, or to a signed-in user who sees the avatar it portrays.",
            "content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


@router.post(
    "/avatars/{avatar_id}/portrait",
    response={202: PortraitOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut, 429: ErrorOut},
)
def portrait_create(request: HttpRequest, avatar_id: Id, payload: PortraitIn) -> Status[dict[str, Any]]:
    """Make a portrait of one of the user's own avatars, in the background (`GET /api/images/{id}` for its status;
    the socket's `image.ready` when it is done). A request the policy forbids is a 422 `image_refused`, no call made."""
    user = request_user(request)
    avatar = avatar_get_owned(user=user, avatar_id=avatar_id)
    image = services.portrait_request(
        owner_id=user.pk, avatar=avatar, extra=payload.prompt, request_id=payload.request_id
    )
    return Status(202, {"image_id": image.pk, "status": image.status})


@router.get("/images/{image_id}", response={200: ImageOut, 404: ErrorOut})
def image_read(request: HttpRequest, image_id: Id) -> dict[str, Any]:
    image = selectors.image_get_visible(user_id=request_user(request).pk, image_id=image_id)
    return selectors.image_dict(image)


@router.get("/images/{image_id}/file", response={404: ErrorOut}, openapi_extra=FILE_OPENAPI)
def image_file(request: HttpRequest, image_id: Id) -> FileResponse:
    image = selectors.image_get_visible(user_id=request_user(request).pk, image_id=image_id)
    if image.status != ImageStatus.READY or not image.file:
        raise NotFound("Picture not found.")
    try:
        handle = picture_open(image.file.name or "")
    except FileNotFoundError as exc:
        raise NotFound("Picture not found.") from exc
    response = FileResponse(handle, content_type=CONTENT_TYPE)
    response["Cache-Control"] = "private, max-age=86400"
    response["Content-Security-Policy"] = "default-src 'none'"
    response["X-Content-Type-Options"] = "nosniff"
    return response
