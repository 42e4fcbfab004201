"""What an avatar remembers about the user: list, correct, pin, forget.

Thin views over memory.selectors and memory.services.
"""

from django.http import HttpRequest
from ninja import Router, Status

from accounts.auth import request_user
from core.api import Id
from memory import selectors, services
from memory.models import Memory
from memory.schemas import MemoryOut, MemoryPatchIn

router = Router(tags=["memories"])


@router.get("/avatars/{avatar_id}/memories", response=list[MemoryOut])
def memory_list(request: HttpRequest, avatar_id: Id) -> list[Memory]:
    return list(selectors.memory_list(user=request_user(request), avatar_id=avatar_id))


@router.patch("/memories/{memory_id}", response=MemoryOut)
def memory_update(request: HttpRequest, memory_id: Id, payload: MemoryPatchIn) -> Memory:
    return services.memory_update(
        user=request_user(request), memory_id=memory_id, text=payload.text, pinned=payload.pinned
    )


@router.delete("/memories/{memory_id}", response={204: None})
def memory_delete(request: HttpRequest, memory_id: Id) -> Status[None]:
    services.memory_delete(user=request_user(request), memory_id=memory_id)
    return Status(204, None)
