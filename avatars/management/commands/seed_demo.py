from collections import Counter
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from avatars.demo import ADMIN_PASSWORD, ADMIN_USERNAME, DEMO_PASSWORD, DEMO_USERNAME, demo_seed


class Command(BaseCommand):
    help = (
        "Create the demo catalogue avatars (Ada, Milo) and, in development, the demo logins "
        f"{DEMO_USERNAME}/{DEMO_PASSWORD} and {ADMIN_USERNAME}/{ADMIN_PASSWORD} (staff). Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        logins = parser.add_mutually_exclusive_group()
        logins.add_argument(
            "--with-logins",
            action="store_true",
            help="Create the demo logins even with DJANGO_DEBUG off (their passwords are public).",
        )
        logins.add_argument("--no-logins", action="store_true", help="Create the avatars only.")

    def handle(self, *args: Any, **options: Any) -> None:
        with_logins = options["with_logins"] or (settings.DEBUG and not options["no_logins"])
        results = demo_seed(with_logins=with_logins)
        for result in results:
            if result.kind == "phrase" and result.outcome == "unchanged":
                continue  # a dozen identical lines on every run say nothing
            note = f" ({result.note})" if result.note else ""
            line = f"{result.outcome:<9} {result.kind} {result.key}{note}"
            self.stdout.write(self.style.WARNING(line) if result.outcome == "skipped" else line)
        tally = Counter(result.outcome for result in results)
        self.stdout.write(
            "Demo data: "
            + ", ".join(f"{tally[outcome]} {outcome}" for outcome in ("created", "updated", "unchanged", "skipped"))
            + "."
        )
        if with_logins:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo logins: {DEMO_USERNAME} / {DEMO_PASSWORD} (app), "
                    f"{ADMIN_USERNAME} / {ADMIN_PASSWORD} (admin)."
                )
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    "Demo logins not created: DJANGO_DEBUG is off or --no-logins was given "
                    "(use --with-logins to create them anyway)."
                )
            )
