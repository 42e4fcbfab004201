"""The admin index's provider health panel: `{% load llm_admin %}{% provider_health_panel %}`."""

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("admin/llm/provider_health.html")
def provider_health_panel() -> dict[str, Any]:
    from llm.alerts import INCIDENTS, incidents_open
    from llm.registry import provider_health

    try:
        health: dict[str, Any] | None = provider_health()
        problem = ""
    except Exception as exc:  # a provider that cannot be built is itself the news
        health, problem = None, f"{type(exc).__name__}: {exc}"
    opened = incidents_open()
    return {
        "health": health,
        "problem": problem,
        "incidents": [{"kind": kind, "since": since, "text": INCIDENTS[kind]} for kind, since in opened.items()],
    }
