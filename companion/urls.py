from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.static import serve

from companion.api import api
from companion.health import healthz, readyz

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("web.urls")),
]
if settings.DEBUG:
    # Uploaded avatar images, in development; never `images/`, the generated pictures, which
    # only images.api serves (to who may see them).
    urlpatterns += [
        re_path(
            rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>(?!images/).*)$",
            serve,
            {"document_root": settings.MEDIA_ROOT},
        )
    ]
