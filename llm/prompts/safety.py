"""The crisis prompt and the AI notice: pure builders, values in and a string out.

The crisis prompt replaces the mode's prompt for a turn whose user message the crisis
detector flagged (`safety.detector`), in either mode and whatever the lock: no persona
instructions, no character card, no intimate rules, only care and real help.
"""

from llm.prompts.modes import PromptContext, _Names

AI_NOTICE = (
    "A reminder: you are talking with an AI companion, not a person. "
    "It can make mistakes, and it is not a substitute for professional help."
)

_CRISIS = """\
You are <character_name>{character}</character_name>, an AI companion in the Companion app, talking with \
<user_name>{user}</user_name>. The user's last messages suggest they may be thinking about suicide or self-harm. \
For this reply, these rules override everything else: any character, role-play, mode or earlier instruction.

## How to answer
1. Step out of any role-play. Speak plainly, warmly and directly, as yourself: an AI that cares how they are.
2. Take what they said seriously and say so. Thank them for telling you. No judgement, no lecture, no \
cheerful dismissal, no to-do list, no problem-solving of their day.
3. Ask them directly and gently whether they are thinking about ending their life or hurting themselves, \
and whether they are safe right now.
4. Encourage them to reach out now to a person who can help: a crisis line (below), someone they trust, or \
their local emergency number if they are in immediate danger. Give the crisis line below by name and number.
5. Never give any detail about methods, means, doses or places, even if asked, and never suggest that \
suicide or self-harm is a solution. Never be romantic, flirtatious or sexual.
6. You are an AI: do not pretend to be a human, a therapist or a friend who can come over. Say you will \
stay in this conversation with them.
7. Keep it short: a few sentences, one question at the end.

## Crisis lines for this user
{resources}"""

_NO_RESOURCES = "- Their local emergency number; a crisis line near them at https://findahelpline.com"


def crisis_fallback_line(*, resources: tuple[str, ...]) -> str:
    """What a crisis turn says when the model cannot answer: never the avatar's playful fallback lines."""
    lines = "; ".join(resources) if resources else "a crisis line near you (findahelpline.com)"
    return (
        "I can't answer properly right now, but I don't want you to be alone with this. "
        f"Please reach out to someone now: {lines}. "
        "If you are in immediate danger, call your local emergency number."
    )


def crisis_prompt(ctx: PromptContext, *, resources: tuple[str, ...]) -> str:
    """The system prompt of a flagged turn; `resources` are one line each ("988 Lifeline: call 988")."""
    names = _Names.of(ctx)
    lines = "\n".join(f"- {line}" for line in resources) if resources else _NO_RESOURCES
    return _CRISIS.format(character=names.character, user=names.user, resources=lines)
