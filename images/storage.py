"""Where pictures are kept: the `IMAGE_STORAGE` alias of Django's STORAGES (companion/settings.py).

By default a FileSystemStorage under MEDIA_ROOT/images with no base URL: nothing serves that
directory; `images.api` reads the file and answers it to who may see it. Any django-storages
backend works the same (`IMAGE_STORAGE_BACKEND` and `IMAGE_STORAGE_OPTIONS`, e.g. S3 with a
private bucket): only `save`, `open` and `delete` are used.
"""

import secrets

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, storages

from images.encode import StoredPicture


def image_storage() -> Storage:
    return storages[getattr(settings, "IMAGE_STORAGE", "images")]


def picture_save(picture: StoredPicture, *, image_id: int) -> str:
    """Save the bytes under a name nobody can guess; the storage's name of the file."""
    name = f"pictures/{image_id}-{secrets.token_urlsafe(12)}.{picture.extension}"
    return image_storage().save(name, ContentFile(picture.data))


def picture_open(name: str) -> File:
    """The stored file, opened for reading (through the storage configured now, not the one the
    model field was built with)."""
    return image_storage().open(name, "rb")


def picture_delete(name: str) -> None:
    if name:
        image_storage().delete(name)
