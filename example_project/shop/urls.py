from __future__ import annotations

from django.urls import path

from . import views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("cart/add/", views.add_to_cart, name="add_to_cart"),
    path("preferences/", views.set_preference, name="set_preference"),
    path("session/clear/", views.clear_session, name="clear_session"),
]
