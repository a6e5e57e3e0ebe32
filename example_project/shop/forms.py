"""Forms of the example shop."""

from __future__ import annotations

from django import forms

from .catalog import PRODUCTS

THEMES = (("light", "Light"), ("dark", "Dark"))
CURRENCIES = (("EUR", "Euro (€)"), ("USD", "US dollar ($)"), ("GBP", "Pound sterling (£)"))


class ProductForm(forms.Form):
    sku = forms.ChoiceField(choices=[(sku, product.name) for sku, product in PRODUCTS.items()])


class PreferencesForm(forms.Form):
    """Each preference is a session key of its own: ``pref:<name>``."""

    theme = forms.ChoiceField(choices=THEMES)
    currency = forms.ChoiceField(choices=CURRENCIES, label="Show prices in")
    newsletter = forms.BooleanField(required=False, label="Send me the newsletter")
