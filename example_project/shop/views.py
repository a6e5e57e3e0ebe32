"""Views of the example shop; each reads or writes only the session keys it needs."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from django_memopt import report, stats
from django_memopt.backends.base import SessionStoreError

from . import cart
from .catalog import PRODUCTS
from .forms import PreferencesForm, ProductForm


def _back(request: HttpRequest, default: str = "shop:home") -> HttpResponse:
    """Redirect to the form's ``next`` field if it is a page of this site."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect(default)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return render(
        request,
        "shop/home.html",
        {"products": PRODUCTS.values(), "visits": request.session["visits"]},
    )


@require_POST
def add_to_cart(request: HttpRequest) -> HttpResponse:
    form = ProductForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown product.")
        return _back(request)
    product = PRODUCTS[form.cleaned_data["sku"]]
    cart.skus(request.session)  # the session is loaded before the (slow) stock check
    if settings.EXAMPLE_STOCK_CHECK_SECONDS:
        time.sleep(settings.EXAMPLE_STOCK_CHECK_SECONDS)
    cart.add(request.session, product)
    messages.success(request, f"Added {product.name} to the cart.")
    return _back(request)


@require_POST
def fill_cart(request: HttpRequest) -> HttpResponse:
    for product in PRODUCTS.values():
        cart.add(request.session, product)
    messages.success(request, f"Added one of each of the {len(PRODUCTS)} products.")
    return redirect("shop:cart")


@require_POST
def remove_from_cart(request: HttpRequest) -> HttpResponse:
    form = ProductForm(request.POST)
    if form.is_valid():
        cart.remove(request.session, form.cleaned_data["sku"])
    return redirect("shop:cart")


@require_GET
def cart_page(request: HttpRequest) -> HttpResponse:
    lines = cart.lines(request.session)
    return render(request, "shop/cart.html", {"lines": lines, "total": cart.total(lines)})


@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    session = request.session
    if request.method == "POST":
        form = PreferencesForm(request.POST)
        if form.is_valid():
            changed = 0
            for name, value in form.cleaned_data.items():
                if session.get(f"pref:{name}") != value:
                    session[f"pref:{name}"] = value
                    changed += 1
            messages.success(request, f"Preferences saved ({changed} changed).")
            return redirect("shop:preferences")
    else:
        form = PreferencesForm(
            initial={
                "theme": session.get("pref:theme", "light"),
                "currency": session.get("pref:currency", "EUR"),
                "newsletter": session.get("pref:newsletter", False),
            }
        )
    return render(request, "shop/preferences.html", {"form": form})


@require_http_methods(["GET", "POST"])
def sign_up(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)  # a new session key; the cart and preferences come along
        messages.success(request, f"Welcome, {user.get_username()}.")
        return redirect("shop:home")
    return render(request, "shop/sign_up.html", {"form": form})


@require_GET
def session_page(request: HttpRequest) -> HttpResponse:
    session = request.session
    fields = [{"key": key, "value": session[key]} for key in sorted(session.keys())]
    return render(request, "shop/session.html", {"fields": fields})


@require_POST
def clear_session(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    messages.info(request, "Session cleared: a new, empty session was started.")
    return redirect("shop:home")


def _plots() -> list[dict[str, Any]]:
    """The figures that move, plotted over the page's life: each series is the change of a
    sample's ``value`` between reloads, per second or per change of its ``per``."""
    label = {key: figure.label for key, figure in report.FIGURES.items()}
    return [
        {
            "id": "loads",
            "title": f"{label['engine', 'loads']} per second",
            "unit": "/s",
            "series": [{"label": label["engine", "loads"], "value": "loads"}],
        },
        {
            "id": "gate",
            "title": f"{label['filter', 'checked']} per second",
            "unit": "/s",
            "series": [
                {"label": label["filter", "passed"], "value": "passed"},
                {"label": label["filter", "rejected"], "value": "rejected"},
            ],
        },
        {
            "id": "gc",
            "title": label["gc", "time_per_request_ns"],
            "unit": "ns",
            "series": [{"label": "per request", "value": "gc_ns", "per": "requests"}],
        },
    ]


def _sample(groups: list[tuple[report.Group, list[report.Row]]]) -> dict[str, Any]:
    """The running totals the plots draw the change of, and when they were read."""
    value = {(row.figure.section, row.figure.key): row.value for _, rows in groups for row in rows}
    return {
        "t": time.time(),
        "loads": value["engine", "loads"],
        "passed": value["filter", "passed"],
        "rejected": value["filter", "rejected"],
        "gc_ns": value["gc", "in_request_time_ns"],
        "requests": value["gc", "requests_finished"],
    }


@require_GET
def stats_page(request: HttpRequest) -> HttpResponse:
    """``memopt_stats`` for this site, by question, with plots of the figures that move."""
    if "django_memopt" not in settings.INSTALLED_APPS:
        why = "memopt_stats reports on django-memopt's engines; this run uses Django's."
        return render(request, "shop/stats.html", {"error": why})
    stats.flush()  # this worker's counts as of now; the others flush every second
    try:
        found = report.collect()
    except (ImproperlyConfigured, SessionStoreError) as exc:
        return render(request, "shop/stats.html", {"error": str(exc)})
    groups = report.rows(found)
    context = {
        "groups": groups,
        "text": report.as_text(found),
        "plots": _plots(),
        "sample": _sample(groups),
    }
    return render(request, "shop/stats.html", context)
