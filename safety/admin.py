"""Operators edit the crisis lines per locale and read the daily counts (numbers only) here."""

import io
from typing import Any

from django.contrib import admin
from django.db.models import Field, QuerySet
from django.forms import Field as FormField
from django.http import HttpRequest, HttpResponse

from safety.models import CrisisResource, SafetyDailyCount
from safety.report import safety_report_write
from safety.selectors import DailyCounts


@admin.register(CrisisResource)
class CrisisResourceAdmin(admin.ModelAdmin):
    list_display = ("locale", "name", "phone", "text", "url", "position", "active")
    list_editable = ("position", "active")
    list_filter = ("locale", "active")
    search_fields = ("name", "locale")

    def formfield_for_dbfield(
        self, db_field: "Field[Any, Any]", request: HttpRequest, **kwargs: Any
    ) -> FormField | None:
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"  # crisis lines are https; Django 6's default
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(SafetyDailyCount)
class SafetyDailyCountAdmin(admin.ModelAdmin):
    """The report: counts per day, by year and month (the date hierarchy), downloadable as CSV."""

    list_display = ("day", "crisis_detections", "referrals_shown", "notices_shown")
    date_hierarchy = "day"
    actions = ("csv_download",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SafetyDailyCount | None = None) -> bool:
        return False

    @admin.action(description="Download the selected days as CSV")
    def csv_download(self, request: HttpRequest, queryset: QuerySet[SafetyDailyCount]) -> HttpResponse:
        rows = queryset.order_by("day").values_list("day", "crisis_detections", "referrals_shown", "notices_shown")
        stream = io.StringIO()
        safety_report_write((DailyCounts(*row) for row in rows), stream)
        response = HttpResponse(stream.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="safety-report.csv"'
        return response
