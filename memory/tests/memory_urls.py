"""A URLconf for the memory tests: the memory API and the admin, as companion/urls.py serves them.

The tests mount `memory.api.router` on its own here, with the project's auth and error
handlers.
"""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

import memory.admin  # noqa: F401  registers the admins before admin.site.urls is read
from accounts.auth import BearerAuth
from companion.api import authentication_error_to_response, domain_error_to_response, validation_error_to_response
from core.errors import DomainError
from memory.api import router

api = NinjaAPI(auth=BearerAuth(), urls_namespace="memory-test-api")


@api.exception_handler(DomainError)
def domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return domain_error_to_response(request, exc)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return validation_error_to_response(request, exc)


@api.exception_handler(AuthenticationError)
def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return authentication_error_to_response(request, exc)


api.add_router("/", router)

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]
