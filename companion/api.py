"""The root NinjaAPI: routers of each app, and domain errors turned into HTTP in one place."""

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.api import router as accounts_router
from accounts.auth import BearerAuth
from avatars.api import router as avatars_router
from conversations.api import router as conversations_router
from core.api import CompanionAPI, MalformedBody, validation_error_body
from core.errors import DomainError, InvalidInput, NotFound, PayloadTooLarge, Unavailable
from core.outage import OUTAGE_ERRORS, UNAVAILABLE_MESSAGE
from images.api import router as images_router
from llm.api import router as llm_router
from memory.api import router as memory_router
from secretary.api import router as secretary_router

logger = logging.getLogger("companion.api")

api = CompanionAPI(
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
        {
            "detail": "Authentication credentials were not provided or are invalid.",
            "code": "unauthorized",
            "field": None,
        },
        status=401,
    )


@api.exception_handler(ValidationError)
def validation_error_to_response(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return api.create_response(request, validation_error_body(exc.errors), status=422)


@api.exception_handler(HttpError)
def http_error_to_response(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja raises these for bodies it cannot parse; the parser's own verdict is the cause.
    if isinstance(exc.__cause__, DomainError):
        return domain_error_to_response(request, exc.__cause__)
    code = "malformed" if exc.status_code == 400 else "error"
    return api.create_response(request, {"detail": str(exc), "code": code, "field": None}, status=exc.status_code)


@api.exception_handler(Http404)
def not_found_to_response(request: HttpRequest, exc: Http404) -> HttpResponse:
    return domain_error_to_response(request, NotFound("Not found."))


@api.exception_handler(RequestDataTooBig)
def too_big_to_response(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return domain_error_to_response(request, PayloadTooLarge("The request body is too large."))


@api.exception_handler(MultiPartParserError)
def multipart_error_to_response(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
    return domain_error_to_response(request, MalformedBody("The multipart body cannot be read (no boundary?)."))


@api.exception_handler(OverflowError)
@api.exception_handler(DataError)
def out_of_range_to_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The net under `core.api.Id`: a number no schema bounded yet reached the database.
    return domain_error_to_response(request, InvalidInput("A number in the request is out of range."))


@api.exception_handler(Exception)
def unexpected_error_to_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    # JSON like every other answer, also with DEBUG off; the traceback goes to the log, not the client.
    logger.error(
        "unhandled error in an API view",
        exc_info=exc,
        extra={"data": {"method": request.method, "path": request.path}},
    )
    return api.create_response(
        request, {"detail": "Something went wrong on our side.", "code": "server_error", "field": None}, status=500
    )


api.add_router("/", accounts_router)
api.add_router("/avatars", avatars_router)
api.add_router("/", conversations_router)
api.add_router("/", memory_router)
api.add_router("/", secretary_router)
api.add_router("/", llm_router)
api.add_router("/", images_router)
