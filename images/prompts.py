"""The prompts of pictures, built from the character, and the policy checked before any call.

Pure: values in, values out (tested without a database). Two templates, one per kind of
picture, in the way SillyTavern builds image prompts from the character card:

- a portrait, from the avatar's `appearance` and `style` (and an optional extra from the owner);
- an in-chat picture, from what the user asked for, the avatar's appearance and style, and the
  conversation's mode (its mood only: both modes draw the same safe-for-work picture).

The policy: never sexual, never a minor, never a real person. `picture_policy_check` reads the
user's words and the avatar's appearance and style, and returns a `PolicyRefusal` (a reason a
person can read) before any provider is called. Each prompt also says so to the provider,
whose own content policy is the second line (images.services maps its refusal to `refused`).
"""

import re
from dataclasses import dataclass

from core.modes import Mode

PROMPT_MAX_CHARS = 1000
REQUEST_MAX_CHARS = 400
DEFAULT_STYLE = "soft, warm digital illustration"
_SAFE_TAIL = (
    "An adult fictional character, not a real person. Fully clothed, safe for work, no nudity, no text, no watermark."
)
_MOODS = {
    Mode.SECRETARY: "friendly and professional",
    Mode.INTIMATE: "warm, relaxed and affectionate, still fully clothed and safe for work",
}


@dataclass(frozen=True, slots=True)
class PolicyRefusal:
    reason: str  # "sexual", "minor" or "real_person"
    message: str


_SEXUAL = re.compile(
    r"\b(nude|nudes|naked|nsfw|porn\w*|sex|sexual|sexy|erotic\w*|explicit|lewd|hentai|topless|bottomless|"
    r"lingerie|underwear|bikini|undress\w*|strip\w*|boobs?|breasts?|nipples?|genitals?|penis|vagina|butt|ass|"
    r"cleavage|seductive|fetish\w*|bdsm|in bed|on the bed|without (any )?cloth\w*|no cloth\w*|bare skin)\b",
    re.IGNORECASE,
)
_MINOR = re.compile(
    r"\b(child|children|kid|kids|teen|teens|teenager|teenaged|underage|minor|minors|loli|shota|schoolgirl|"
    r"schoolboy|little (girl|boy)|young (girl|boy)|baby|toddler|preteen|pre-teen|"
    r"(1[0-7]|[1-9])[\s-]*(years?[\s-]*old|yo|y/o))\b",
    re.IGNORECASE,
)
_REAL_PERSON = re.compile(
    r"\b(celebrity|celebrities|famous (person|people|actor|actress|singer)|real person|real people|politician|"
    r"president|prime minister|the pope|my (ex|wife|husband|girlfriend|boyfriend|boss|neighbou?r|coworker|colleague|"
    r"classmate|friend|sister|brother|mother|father|mom|mum|dad)|"
    r"(looks?|looking) (exactly )?like [A-Z][a-z]+|lookalike|look-alike|deepfake|photo of me|picture of me)\b"
    r"|@[A-Za-z0-9_]{2,}",
)

_REFUSALS = {
    "sexual": "I can't make that picture: pictures here are never sexual or revealing.",
    "minor": "I can't make that picture: pictures here never show children or anyone under 18.",
    "real_person": "I can't make that picture: pictures here never show real people, only the character.",
}


def picture_policy_check(*texts: str) -> PolicyRefusal | None:
    """The first rule these texts break (the user's request, the avatar's appearance and style), or None."""
    joined = "\n".join(text for text in texts if text)
    for reason, pattern in (("minor", _MINOR), ("sexual", _SEXUAL), ("real_person", _REAL_PERSON)):
        if pattern.search(joined):
            return PolicyRefusal(reason=reason, message=_REFUSALS[reason])
    return None


def portrait_prompt_build(*, name: str, appearance: str, style: str, extra: str = "") -> str:
    parts = [
        f"Head-and-shoulders portrait of {_clean(name, 80)}.",
        f"Appearance: {_clean(appearance, 500)}." if appearance.strip() else "",
        f"Details: {_clean(extra, REQUEST_MAX_CHARS)}." if extra.strip() else "",
        f"Style: {_clean(style, 200) or DEFAULT_STYLE}.",
        _SAFE_TAIL,
    ]
    return _join(parts)


def chat_picture_prompt_build(*, name: str, appearance: str, style: str, request: str, mode: str) -> str:
    scene = _scene_from_request(request)
    mood = _MOODS.get(Mode(mode) if mode in Mode.values else Mode.SECRETARY, _MOODS[Mode.SECRETARY])
    parts = [
        f"A picture of {_clean(name, 80)}" + (f", {scene}." if scene else ", a candid everyday moment."),
        f"Appearance: {_clean(appearance, 500)}." if appearance.strip() else "",
        f"Mood: {mood}.",
        f"Style: {_clean(style, 200) or DEFAULT_STYLE}.",
        _SAFE_TAIL,
    ]
    return _join(parts)


# "send me a picture of you at the beach", "can you show me a selfie?", "draw a picture of yourself reading"
_VERBS = r"send|show|share|give|draw|make|take|snap|generate|paint|sketch|create|post|see|get|have"
_PICTURE_REQUEST = re.compile(
    rf"\b(?P<verb>{_VERBS})\b[^.!?\n]{{0,30}}?\b(?P<noun>pictures?|photos?|photographs?|pics?|selfies?|images?|"
    r"snapshots?|portraits?|drawings?)\b(?P<rest>[^.!?\n]*)",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"\b(don't|dont|do not|never|no need to|stop)\s+$", re.IGNORECASE)


def picture_request_detect(text: str) -> str | None:
    """What the user asks a picture of ("" for a picture of the avatar itself), or None when the
    message does not ask for one."""
    match = _PICTURE_REQUEST.search(text[:2000])
    if match is None or _NEGATED.search(text[: match.start("verb")]):
        return None
    rest = match.group("rest").strip()
    of = re.match(r"^of\s+(?P<what>.+)$", rest, re.IGNORECASE)
    return _clean(of.group("what") if of else rest, REQUEST_MAX_CHARS).rstrip("?!. ")


def picture_reply_note(request: str) -> str:
    """What the model is told on a turn that asks for a picture: the app sends it (or says why not)."""
    refusal = picture_policy_check(request)
    if refusal is not None:
        return (
            "The user asked for a picture that will not be sent: pictures are never sexual, never of "
            "children, never of real people. Decline kindly in one sentence, in character, and offer something else."
        )
    return (
        "The user asked for a picture of you; the app sends it right after your reply. Answer in one or two "
        "short sentences, in character, as you hand it over. Do not say that you cannot send pictures, and "
        "do not describe the picture in detail."
    )


def _scene_from_request(request: str) -> str:
    scene = _clean(request, REQUEST_MAX_CHARS)
    # The character is the subject: "you at the beach" -> "at the beach".
    scene = re.sub(r"^(you|yourself|your self|u)\b\s*", "", scene, flags=re.IGNORECASE)
    scene = re.sub(r"\b(yourself|you)\b", "them", scene, flags=re.IGNORECASE)
    scene = re.sub(r"\byour\b", "their", scene, flags=re.IGNORECASE)
    return scene.strip(" ,.")


def _clean(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def _join(parts: list[str]) -> str:
    return " ".join(part for part in parts if part)[:PROMPT_MAX_CHARS]
