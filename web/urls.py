from django.urls import URLPattern, path

from web import views

app_name = "web"

urlpatterns: list[URLPattern] = [
    path("", views.chat_page, name="chat"),
]
