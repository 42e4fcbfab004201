"""The chat page at `/`, without a browser: it is served, complete and locked down."""

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client, override_settings

from llm.testing import provider_configured

STATIC_FILES = ("web/chat.js", "web/chat.css", "web/favicon.svg", "web/admin-insight.css")


@pytest.fixture(autouse=True)
def _fresh_provider():
    with provider_configured():
        yield


def test_the_page_is_served_at_the_root_with_the_app_shell(anon_client):
    response = anon_client.get("/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    content = response.content.decode()
    assert '<div id="app" class="app" data-api="/api" data-ws-path="/ws/conversations/"' in content
    for element in (
        "signin-form",
        "register-form",
        "conversation-list",
        "mode-badge",
        "composer-input",
        "stop",
        "secretary-panel",
        "settings-dialog",
    ):
        assert f'id="{element}"' in content
    assert '<noscript><p class="notice">The chat needs JavaScript.' in content


def test_the_page_loads_only_its_own_static_files(anon_client):
    content = anon_client.get("/").content.decode()

    sources = re.findall(r'(?:src|href)="([^"]+)"', content)
    assert sorted(s for s in sources if s.startswith("/static/")) == [
        "/static/web/chat.css",
        "/static/web/chat.js",
        "/static/web/favicon.svg",
    ]
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))]
    assert "<script>" not in content  # no inline script: the policy below forbids it


@pytest.mark.parametrize("path", STATIC_FILES)
def test_the_static_files_resolve_and_are_served(anon_client, path):
    assert finders.find(path) is not None

    response = anon_client.get(f"/static/{path}")

    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])


def test_the_page_allows_scripts_and_connections_only_to_its_own_origin(anon_client):
    response = anon_client.get("/")

    policy = dict(part.split(" ", 1) for part in response["Content-Security-Policy"].split("; "))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self' ws: wss:"
    assert policy["frame-ancestors"] == "'none'"
    assert "no-store" in response["Cache-Control"]


def test_head_is_allowed_and_a_post_is_refused_without_a_page(anon_client):
    assert anon_client.head("/").status_code == 200

    response = anon_client.post("/", {"x": "1"})

    assert response.status_code == 405


@override_settings(LLM_PROVIDER="openai", LLM_API_KEY="", LLM_BASE_URL="")
def test_without_a_model_the_page_says_how_to_configure_one(anon_client):
    content = anon_client.get("/").content.decode()

    assert 'id="model-notice"' in content
    assert 'data-model-configured="false"' in content


@override_settings(LLM_PROVIDER="fake")
def test_with_a_model_there_is_no_configuration_notice(anon_client):
    content = anon_client.get("/").content.decode()

    assert 'id="model-notice"' not in content
    assert 'data-model-configured="true"' in content


@override_settings(LLM_PROVIDER="no.such.Provider")
def test_a_broken_model_setting_still_serves_the_page(anon_client):
    response = anon_client.get("/")

    assert response.status_code == 200
    assert 'id="model-notice"' in response.content.decode()


@override_settings(DEBUG=False, ALLOWED_HOSTS=["chat.example.com"])
def test_the_api_and_admin_are_not_shadowed_by_the_page():
    client = Client(HTTP_HOST="chat.example.com")

    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/no-such-page").status_code == 404


def test_the_composer_takes_the_servers_limit_and_has_no_maxlength_to_cut_a_paste(anon_client):
    from conversations.turns.request import CONTENT_MAX_CHARS

    content = anon_client.get("/").content.decode()

    assert f'data-message-max-chars="{CONTENT_MAX_CHARS}"' in content
    (composer,) = re.findall(r'<textarea id="composer-input"[^>]*>', content)
    assert "maxlength" not in composer
