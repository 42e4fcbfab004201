"""The beat schedule names tasks by their Celery names: each must be one a worker has."""

from companion.beat import BEAT_SCHEDULE
from companion.celery import app


def test_the_beat_schedule_names_registered_tasks() -> None:
    app.loader.import_default_modules()
    assert {entry["task"] for entry in BEAT_SCHEDULE.values()} <= set(app.tasks)
    assert BEAT_SCHEDULE["summarize-sweep"]["schedule"] <= 600


def test_due_reminders_are_looked_for_often_enough_to_go_out_within_five_seconds() -> None:
    entry = BEAT_SCHEDULE["reminders-deliver-due"]

    assert entry["task"] == "secretary.reminders_deliver_due"
    assert entry["schedule"] <= 2.0
    # A run still queued when the next is due is dropped, not piled up behind a slow worker
    assert entry["options"]["expires"] <= entry["schedule"]
    assert BEAT_SCHEDULE["proactive-sweep"]["task"] == "secretary.proactive_sweep"
