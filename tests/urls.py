from __future__ import annotations

from django.urls import path

from django_memopt.views import metrics, user_sessions
from tests import views

urlpatterns = [
    path("read/<str:name>/", views.read),
    path("store/<str:name>/<str:value>/", views.store),
    path("append/<str:name>/<str:value>/", views.append),
    path("flush/", views.flush),
    path("untouched/", views.untouched),
    path("fail/<str:name>/<str:value>/", views.fail),
    path("logged-out-meanwhile/<str:name>/<str:value>/", views.logged_out_meanwhile),
    path("metrics/", metrics),
    path("sessions/", user_sessions),
    path("log-in/<str:username>/", views.log_in),
]
