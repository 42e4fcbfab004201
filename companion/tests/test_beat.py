"""The beat schedule names tasks by their Celery names: each must be one a worker has."""

from companion.beat import BEAT_SCHEDULE
from companion.celery import app


def test_the_beat_schedule_names_registered_tasks() -> None:
    app.loader.import_default_modules()
    assert {entry["task"] for entry in BEAT_SCHEDULE.values()} <= set(app.tasks)
    assert BEAT_SCHEDULE["summarize-sweep"]["schedule"] <= 600
