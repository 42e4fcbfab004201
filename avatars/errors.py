"""Avatar and character card errors, each with a stable code (translated to HTTP in companion/api.py)."""

from core.errors import Conflict, Forbidden, InvalidInput, PayloadTooLarge


class AvatarReadOnly(Forbidden):
    """A catalogue avatar the user can see but does not own: readable, never writable."""

    code = "read_only"


class AvatarLimitReached(Conflict):
    code = "avatar_limit_reached"


class PublicNotAllowed(InvalidInput):
    """Only staff may put an avatar in the public catalogue."""

    code = "public_staff_only"


# --- Character cards ------------------------------------------------------------------------


class CardError(InvalidInput):
    code = "card_invalid"


class CardTooLarge(PayloadTooLarge):
    code = "card_too_large"


class CardNotJson(CardError):
    code = "card_not_json"


class CardUnknownSpec(CardError):
    code = "card_unknown_spec"


class CardMissingField(CardError):
    code = "card_missing_field"


class CardInvalidField(CardError):
    """A card field of the wrong type, or longer than the avatar field it maps to allows."""

    code = "card_invalid_field"


class CardBadBase64(CardError):
    code = "card_bad_base64"


class CardMissingFile(CardError):
    code = "card_missing_file"


class CardUnsupportedMediaType(CardError):
    code = "card_unsupported_media_type"
    status_code = 415


class PngNoCardChunk(CardError):
    code = "png_no_card_chunk"


class PngInvalid(CardError):
    code = "png_invalid"


class PngTooLarge(PayloadTooLarge):
    """Too many pixels to decode safely, whatever the file size."""

    code = "png_too_large"
