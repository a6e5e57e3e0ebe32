"""Views of the example shop: each one reads or writes a few session keys."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from .forms import PRODUCTS, AddToCartForm, PreferenceForm


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    session = request.session
    session["visits"] = session.get("visits", 0) + 1
    cart = session.get("cart", [])
    context = {
        # Reading every item decodes every field; a normal view reads only what it needs.
        "session_items": sorted(session.items()),
        "visits": session["visits"],
        "cart": [PRODUCTS.get(product, product) for product in cart],
        "cart_form": AddToCartForm(),
        "preference_form": PreferenceForm(),
    }
    return render(request, "shop/home.html", context)


@require_POST
def add_to_cart(request: HttpRequest) -> HttpResponse:
    form = AddToCartForm(request.POST)
    if form.is_valid():
        product = form.cleaned_data["product"]
        # The list is changed in place, which the session cannot see: say so.
        request.session.setdefault("cart", []).append(product)
        request.session.modified = True
        messages.success(request, f"Added {PRODUCTS[product]} to the cart.")
    else:
        messages.error(request, "Unknown product.")
    return redirect("shop:home")


@require_POST
def set_preference(request: HttpRequest) -> HttpResponse:
    form = PreferenceForm(request.POST)
    if form.is_valid():
        key = f"pref_{form.cleaned_data['name']}"
        request.session[key] = form.cleaned_data["value"]
        messages.success(request, f"Set {key}.")
    else:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
    return redirect("shop:home")


@require_POST
def clear_session(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    messages.info(request, "Session cleared: a new, empty session was started.")
    return redirect("shop:home")
