"""Forms of the example shop."""

from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

PRODUCTS = {
    "apple": "Apple",
    "bread": "Bread",
    "cheese": "Cheese",
    "coffee": "Coffee",
}


class AddToCartForm(forms.Form):
    product = forms.ChoiceField(choices=sorted(PRODUCTS.items()))


class PreferenceForm(forms.Form):
    name = forms.CharField(
        max_length=40,
        validators=[RegexValidator(r"^[a-z][a-z0-9_]*$", "Lowercase letters, digits and _ only.")],
        help_text="Stored in the session as pref_<name>.",
    )
    value = forms.CharField(max_length=200)
