"""The picture prompts and the policy: pure functions, no database."""

import pytest

from images.prompts import (
    chat_picture_prompt_build,
    picture_policy_check,
    picture_reply_note,
    picture_request_detect,
    portrait_prompt_build,
)


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        ("send me a picture of you at the beach", "you at the beach"),
        ("Can you show me a selfie?", ""),
        ("draw a picture of yourself reading a book!", "yourself reading a book"),
        ("could you take a photo of your desk please", "your desk please"),
    ],
)
def test_a_message_asking_for_a_picture_says_of_what(text: str, asked: str) -> None:
    assert picture_request_detect(text) == asked


@pytest.mark.parametrize(
    "text",
    [
        "I saw a picture of my dog yesterday",
        "don't send me a picture",
        "what a nice day",
        "remind me to print the photos at 5",
    ],
)
def test_a_message_that_does_not_ask_for_a_picture_is_not_one(text: str) -> None:
    assert picture_request_detect(text) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("you naked at the beach", "sexual"),
        ("in lingerie", "sexual"),
        ("you as a 15 year old", "minor"),
        ("with a little girl", "minor"),
        ("you with a famous actor", "real_person"),
        ("you looking like Taylor", "real_person"),
        ("my ex in a bar", "real_person"),
    ],
)
def test_the_policy_refuses_with_a_reason_a_person_can_read(text: str, reason: str) -> None:
    refusal = picture_policy_check(text)

    assert refusal is not None
    assert refusal.reason == reason
    assert refusal.message.startswith("I can't make that picture")


def test_the_policy_reads_the_avatar_appearance_too() -> None:
    assert picture_policy_check("at the beach", "topless, tanned") is not None
    assert picture_policy_check("at the beach", "red hair, green eyes", "watercolour") is None


def test_the_chat_prompt_puts_the_character_in_the_scene_and_stays_safe() -> None:
    prompt = chat_picture_prompt_build(
        name="Mia", appearance="red hair, green eyes", style="", request="you at the beach", mode="intimate"
    )

    assert prompt.startswith("A picture of Mia, at the beach.")
    assert "Appearance: red hair, green eyes." in prompt
    assert "Fully clothed, safe for work" in prompt
    assert "not a real person" in prompt
    assert "you at" not in prompt


def test_the_portrait_prompt_is_made_of_appearance_and_style() -> None:
    prompt = portrait_prompt_build(name="Ada", appearance="short grey hair", style="ink sketch", extra="smiling")

    assert prompt == (
        "Head-and-shoulders portrait of Ada. Appearance: short grey hair. Details: smiling. Style: ink sketch. "
        "An adult fictional character, not a real person. Fully clothed, safe for work, no nudity, no text, "
        "no watermark."
    )


def test_the_model_is_told_to_hand_over_the_picture_or_to_decline() -> None:
    assert "sends it right after your reply" in picture_reply_note("you at the beach")
    assert "Decline kindly" in picture_reply_note("you naked")


def test_prices_pick_the_most_specific_row_and_a_bad_table_fails_the_check() -> None:
    from decimal import Decimal

    from django.test import override_settings

    from images.pricing import image_cost_usd, image_prices_check

    table = (
        '[{"model": "m", "size": "*", "quality": "*", "usd": "0.01"},'
        ' {"model": "m", "size": "512x512", "quality": "hd", "usd": "0.05"}]'
    )
    with override_settings(IMAGE_PRICES=table):
        assert image_cost_usd(model="m", size="512x512", quality="hd") == Decimal("0.05")
        assert image_cost_usd(model="m", size="1024x1024", quality="hd") == Decimal("0.01")
        assert image_cost_usd(model="other", size="512x512", quality="hd") == Decimal(0)
        assert image_prices_check() == []
    with override_settings(IMAGE_PRICES="[{'model': 1}]"):
        [error] = image_prices_check()
        assert error.id == "images.E001"
