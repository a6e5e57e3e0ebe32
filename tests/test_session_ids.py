"""Signed session IDs on their own: no Django, no store."""

from __future__ import annotations

import hashlib
import re
import string
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_memopt.codec import derive_key
from django_memopt.session_ids import (
    _TAG_PREFIX,
    MAX_ISSUED_AT,
    SIGNED_ID_LENGTH,
    IdCheck,
    SessionIds,
    derive_id_key,
)

# The engines' rule for a session key (SESSION_KEY_RE in django_memopt/backends/base.py,
# which imports Django, so it is restated here).
SESSION_KEY_RE = re.compile(r"[a-z0-9]{8,64}\Z")
ALPHABET = string.digits + string.ascii_lowercase

NEW, OLD, OTHER = derive_id_key("new secret"), derive_id_key("old secret"), derive_id_key("x")
ids = SessionIds([NEW])


def test_imports_nothing_from_django() -> None:
    code = (
        "import sys, django_memopt.session_ids; "
        "loaded = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- minting ---------------------------------------------------------------------------


def test_minted_ids_are_valid_keys_of_the_signed_length_and_check_as_signed() -> None:
    assert SIGNED_ID_LENGTH == 48
    for _ in range(200):
        session_id = ids.mint()
        assert len(session_id) == 48
        assert SESSION_KEY_RE.match(session_id)
        assert ids.check(session_id).status == "signed"


def test_minted_ids_are_unique() -> None:
    minted = {ids.mint(now=1_700_000_000) for _ in range(20_000)}
    assert len(minted) == 20_000
    # Same second, so the uniqueness comes from the random part, which uses the alphabet.
    assert {char for session_id in minted for char in session_id[:25]} == set(ALPHABET)


@pytest.mark.parametrize("now", [0, 1, 59.999, 1_700_000_000.75, 2**32, MAX_ISSUED_AT])
def test_issue_time_round_trips_to_the_second(now: float) -> None:
    assert ids.check(ids.mint(now=now)) == IdCheck("signed", float(int(now)))


def test_issue_time_defaults_to_now() -> None:
    before = time.time()
    issued_at = ids.check(ids.mint()).issued_at
    after = time.time()
    assert issued_at is not None
    assert int(before) <= issued_at <= after


@pytest.mark.parametrize("now", [-1, MAX_ISSUED_AT + 1, float("nan"), float("inf")])
def test_mint_refuses_an_issue_time_that_does_not_fit(now: float) -> None:
    with pytest.raises(ValueError, match="issued at"):
        ids.mint(now=now)


def test_tag_is_keyed_blake2b_of_the_first_32_characters() -> None:
    # The format is a contract: another process (or version) must verify these IDs.
    session_id = ids.mint(now=1_700_000_000)
    expected = hashlib.blake2b(
        _TAG_PREFIX + session_id[:32].encode(), key=NEW, digest_size=8
    ).hexdigest()
    assert session_id[32:] == expected
    assert session_id[25:32] == "0s44we8"  # 1_700_000_000 in base 36, padded to 7


# -- keys ------------------------------------------------------------------------------


def test_fallback_keys_verify_and_only_the_first_signs() -> None:
    minted_with_old = SessionIds([OLD]).mint()
    rotated = SessionIds([NEW, OLD])
    assert rotated.check(minted_with_old).status == "signed"
    assert SessionIds([NEW]).check(minted_with_old).status == "forged"
    # The rotated instance signs with the new key alone.
    minted_after_rotation = rotated.mint()
    assert SessionIds([NEW]).check(minted_after_rotation).status == "signed"
    assert SessionIds([OLD]).check(minted_after_rotation).status == "forged"


def test_an_id_minted_under_an_unrelated_key_is_forged() -> None:
    foreign = SessionIds([OTHER]).mint()
    assert SessionIds([NEW, OLD]).check(foreign) == IdCheck("forged", None)


def test_from_secrets_derives_the_keys_in_order() -> None:
    from_secrets = SessionIds.from_secrets(["new secret", b"old secret"])
    assert from_secrets.check(SessionIds([OLD]).mint()).status == "signed"
    assert SessionIds([NEW]).check(from_secrets.mint()).status == "signed"
    assert SessionIds([OLD]).check(from_secrets.mint()).status == "forged"


def test_derived_key_is_its_own() -> None:
    assert derive_id_key("secret") == derive_id_key(b"secret")
    assert len(derive_id_key("secret")) == 32
    assert derive_id_key("secret") != derive_id_key("secret2")
    # Never the codec's key for the same secret: IDs and field tags do not share a key.
    assert derive_id_key("secret") != derive_key("secret")
    assert derive_id_key(b"secret") != derive_key(b"secret")


def test_no_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        SessionIds([])


# -- tampering -------------------------------------------------------------------------


def test_changing_any_single_character_makes_the_id_forged() -> None:
    session_id = ids.mint(now=1_700_000_000)
    checked = 0
    for position, original in enumerate(session_id):
        for char in ALPHABET:
            if char == original:
                continue
            tampered = session_id[:position] + char + session_id[position + 1 :]
            assert ids.check(tampered) == IdCheck("forged", None), (position, char)
            checked += 1
    assert checked == 48 * 35


def test_a_made_up_id_of_the_signed_length_is_forged() -> None:
    assert ids.check("a" * 48).status == "forged"
    assert ids.check("0" * 48).status == "forged"
    # A valid-looking tag with an issue time far in the future: still only the tag counts.
    session_id = ids.mint(now=MAX_ISSUED_AT)
    assert ids.check(session_id[:25] + "zzzzzzy" + session_id[32:]).status == "forged"


# -- legacy and hostile input ----------------------------------------------------------


def test_a_legacy_32_character_id_is_unsigned() -> None:
    # What Django's engines (and ours, before signed IDs) mint.
    assert ids.check("k3q9x0c1m2v8b7n6z5l4j3h2g1f0d9s8") == IdCheck("unsigned", None)


@pytest.mark.parametrize("length", [n for n in range(8, 65) if n != 48])
def test_valid_keys_of_any_other_length_are_unsigned(length: int) -> None:
    assert ids.check(("a1b2" * 16)[:length]) == IdCheck("unsigned", None)
    # Even a truncated or extended signed ID: only the signed length is ever verified.
    minted = ids.mint()
    grown = (minted + minted)[:length]
    assert ids.check(grown) == IdCheck("unsigned", None)


@pytest.mark.parametrize(
    "hostile",
    [
        "a" * 10_000,  # overlong
        "a" * 65,
        "a" * 10_000_000,
        "",
        "a" * 7,
        "é" * 32,  # non-ASCII
        "１２３４５６７８" * 4,  # fullwidth digits: alphanumeric, but not ASCII
        "\ud800" * 32,  # lone surrogates
        "abcdefgh\x00" + "a" * 23,  # NUL
        "a" * 47 + "\x00",
        "A" * 32,  # uppercase
        ids.mint().upper(),
        "abc/../abcdefgh" + "a" * 33,
        "a" * 47 + "\n",
        None,
        b"a" * 32,
        b"a" * 48,
        bytearray(b"a" * 32),
        memoryview(b"a" * 48),
        32,
        ["a" * 32],
        object(),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_hostile_input_is_malformed(hostile: object) -> None:
    assert ids.check(hostile) == IdCheck("malformed", None)


def test_str_subclasses_are_judged_by_their_text() -> None:
    class Sneaky(str):
        def __len__(self) -> int:
            return 48

        def __getitem__(self, index: object) -> str:
            return "a"

        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    minted = ids.mint()
    assert ids.check(Sneaky(minted)).status == "signed"
    assert ids.check(Sneaky("a" * 10_000)).status == "malformed"
    assert ids.check(Sneaky("a" * 32)).status == "unsigned"
    assert ids.check(Sneaky(minted[:-1] + ("0" if minted[-1] != "0" else "1"))).status == "forged"


# -- properties ------------------------------------------------------------------------

ANYTHING = st.one_of(
    st.text(),
    st.text(alphabet=ALPHABET, max_size=80),
    st.text(alphabet=ALPHABET, min_size=48, max_size=48),
    st.text(alphabet=ALPHABET + "ABZ\x00\ud800é/-_", min_size=40, max_size=70),
    st.binary(),
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.text()),
)


@given(ANYTHING)
def test_check_never_raises_and_never_says_signed_for_made_up_input(value: object) -> None:
    result = ids.check(value)
    assert isinstance(result, IdCheck)
    assert result.status != "signed"
    assert result.issued_at is None
    if not isinstance(value, str) or not SESSION_KEY_RE.match(value):
        assert result.status == "malformed"
    elif len(value) == SIGNED_ID_LENGTH:
        assert result.status == "forged"
    else:
        assert result.status == "unsigned"


@given(st.floats(min_value=0, max_value=MAX_ISSUED_AT))
def test_any_issue_time_in_range_round_trips(now: float) -> None:
    assert ids.check(ids.mint(now=now)) == IdCheck("signed", float(int(now)))
