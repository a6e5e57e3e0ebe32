from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

import django_memopt.views

from . import views

app_name = "shop"

urlpatterns = [
    path("", views.home, name="home"),
    path("cart/", views.cart_page, name="cart"),
    path("cart/add/", views.add_to_cart, name="add_to_cart"),
    path("cart/fill/", views.fill_cart, name="fill_cart"),
    path("cart/remove/", views.remove_from_cart, name="remove_from_cart"),
    path("preferences/", views.preferences, name="preferences"),
    path("session/", views.session_page, name="session"),
    path("session/clear/", views.clear_session, name="clear_session"),
    path("stats/", views.stats_page, name="stats"),
    path("accounts/sign-up/", views.sign_up, name="sign_up"),
    path(
        "accounts/log-in/",
        auth_views.LoginView.as_view(template_name="shop/log_in.html"),
        name="login",
    ),
    path("accounts/log-out/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/sessions/",
        django_memopt.views.user_sessions,
        {"template_name": "shop/sessions.html"},
        name="sessions",
    ),
]
