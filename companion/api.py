"""The root NinjaAPI: routers of each app, and domain errors turned into HTTP in one place."""

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.api import router as accounts_router
from accounts.auth import BearerAuth
from avatars.api import router as avatars_router
from conversations.api import router as conversations_router
from core.errors import DomainError, Unavailable
from core.outage import OUTAGE_ERRORS, UNAVAILABLE_MESSAGE
from llm.api import router as llm_router
from memory.api import router as memory_router
from secretary.api import router as secretary_router

api = NinjaAPI(
    title="Companion API",
    version="1.0.0",
    description="Companion avatars: accounts, avatars, conversations, memories. See docs/api.md.",
    auth=BearerAuth(),
    urls_namespace="api",
)


@api.exception_handler(DomainError)
def domain_error_to_response(request: HttpRequest, exc: DomainError) -> HttpResponse:
    response = api.create_response(request, exc.as_dict(), status=exc.status_code)
    retry_after = getattr(exc, "retry_after", None)  # Throttled, QuotaExceeded
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def outage_to_response(request: HttpRequest, exc: Exception | type[Exception]) -> HttpResponse:
    """Redis (cache, channel layer, broker) did not answer where no service said so: a 503, not a 500."""
    return domain_error_to_response(request, Unavailable(UNAVAILABLE_MESSAGE))


for _outage_error in OUTAGE_ERRORS:
    api.add_exception_handler(_outage_error, outage_to_response)


@api.exception_handler(AuthenticationError)
def authentication_error_to_response(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request,
        {"detail": "Authentication credentials were not provided or are invalid.", "code": "unauthorized"},
        status=401,
    )


@api.exception_handler(ValidationError)
def validation_error_to_response(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return api.create_response(request, {"detail": exc.errors, "code": "invalid"}, status=422)


@api.exception_handler(HttpError)
def http_error_to_response(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja raises these for bodies it cannot parse (malformed JSON, wrong content type).
    code = "malformed" if exc.status_code == 400 else "error"
    return api.create_response(request, {"detail": str(exc), "code": code}, status=exc.status_code)


api.add_router("/", accounts_router)
api.add_router("/avatars", avatars_router)
api.add_router("/", conversations_router)
api.add_router("/", memory_router)
api.add_router("/", secretary_router)
api.add_router("/", llm_router)
