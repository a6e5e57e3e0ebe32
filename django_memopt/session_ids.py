"""Signed session IDs: an ID that says when it was issued and proves we minted it.

This module imports nothing from Django. A signed ID is 48 characters of ``[a-z0-9]``::

    random (25) | issued at (7) | tag (16)

* ``random``: 25 characters of ``[a-z0-9]`` drawn uniformly from :mod:`secrets`
  (about 129 bits), so IDs cannot be guessed;
* ``issued at``: whole seconds since the epoch, base 36, zero-padded (good until the
  year 4453);
* ``tag``: the first 8 bytes of a keyed BLAKE2b over a fixed domain-separation prefix and
  the first 32 characters, as lowercase hex.

So a middleware can tell, without asking the store, an ID we minted (``"signed"``) from a
forged one (``"forged"``), from a legacy 32-character ID minted by Django's engines or by
older versions of ours (``"unsigned"``), and from something no engine accepts
(``"malformed"``). Every signed ID is also a valid key for the engines, which accept
``[a-z0-9]{8,64}``, and its length tells it apart from a legacy ID.

A 64-bit tag means a forger must try about 2**63 IDs, each one a request, to get one past
the check; the random part, not the tag, is what keeps sessions from being guessed. The tag
only says *we minted this ID at this time*: whether the session exists, and whether the
issue time is too old (or in the future, which a correct tag still vouches for), is for
the caller to decide.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple

__all__ = [
    "SIGNED_ID_LENGTH",
    "IdCheck",
    "SessionIds",
    "derive_id_key",
]

#: The length of a signed ID; every other valid length is a legacy (unsigned) ID.
SIGNED_ID_LENGTH: Final = 48

RANDOM_LENGTH: Final = 25
TIME_LENGTH: Final = 7
TAG_LENGTH: Final = 16  # hex characters: 8 bytes of BLAKE2b
SIGNED_LENGTH: Final = RANDOM_LENGTH + TIME_LENGTH  # the characters the tag covers

#: The engines' own limits on a session key (``SESSION_KEY_RE`` in ``backends/base.py``).
MIN_ID_LENGTH: Final = 8
MAX_ID_LENGTH: Final = 64

_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_RANDOM_SPACE: Final = len(_ALPHABET) ** RANDOM_LENGTH
#: Issue times must fit the 7 base-36 characters: from the epoch to the year 4453.
MAX_ISSUED_AT: Final = len(_ALPHABET) ** TIME_LENGTH - 1

_ALPHABET_BYTES: Final = _ALPHABET.encode("ascii")

# Separates the keys derived here from any other use of the same secret; different from
# the codec's context, so session IDs and field tags never share a key.
_KEY_CONTEXT: Final = b"django_memopt.session_ids.id-tag.v1"
# Fed to the keyed hash before the ID, so no other BLAKE2b use of a key tags the same.
_TAG_PREFIX: Final = b"django_memopt.session-id.v1:"

Status = Literal["signed", "unsigned", "forged", "malformed"]


class IdCheck(NamedTuple):
    """What :meth:`SessionIds.check` found; ``issued_at`` is set for ``"signed"`` only."""

    status: Status
    issued_at: float | None  # seconds since the epoch, whole


_compare_digest: Final = hmac.compare_digest
_new_tuple: Final = tuple.__new__

# The three verdicts that carry no time, built once: check() runs on every request.
_MALFORMED: Final = IdCheck("malformed", None)
_UNSIGNED: Final = IdCheck("unsigned", None)
_FORGED: Final = IdCheck("forged", None)


def derive_id_key(secret: str | bytes) -> bytes:
    """The 32-byte ID tag key for one secret (Django's ``SECRET_KEY`` or a fallback)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.digest(secret, _KEY_CONTEXT, "sha256")


def _base36(number: int, width: int) -> str:
    """``number`` (``0 <= number < 36**width``) in base 36, zero-padded to ``width``."""
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


class SessionIds:
    """Mints and checks signed session IDs.

    ``keys`` are tag keys from :func:`derive_id_key` (at most 64 bytes each, BLAKE2b's
    limit): the first signs, all of them verify, so a secret can be rotated without
    turning the IDs already handed out into forgeries. Instances are immutable and safe to
    share between threads.
    """

    __slots__ = ("_hashers",)

    def __init__(self, keys: Iterable[bytes]) -> None:
        # One hasher per key, already fed the prefix; each tag is a copy of it, so the
        # key block is hashed once per key here, not once per check.
        self._hashers: tuple[Any, ...] = tuple(
            hashlib.blake2b(_TAG_PREFIX, key=key, digest_size=TAG_LENGTH // 2) for key in keys
        )
        if not self._hashers:
            raise ValueError("SessionIds needs at least one key")

    @classmethod
    def from_secrets(cls, secrets: Iterable[str | bytes]) -> SessionIds:
        """Keys for ``secrets`` (``SECRET_KEY`` first, then ``SECRET_KEY_FALLBACKS``)."""
        return cls(derive_id_key(secret) for secret in secrets)

    @staticmethod
    def _tag(hasher: Any, signed: bytes) -> str:
        h = hasher.copy()
        h.update(signed)
        return h.hexdigest()  # type: ignore[no-any-return]

    def mint(self, now: float | None = None) -> str:
        """A fresh signed ID issued at ``now`` (default ``time.time()``), to the second.

        Raises ``ValueError`` if ``now`` is not between 0 and :data:`MAX_ISSUED_AT`.
        """
        if now is None:
            now = time.time()
        if not 0 <= now <= MAX_ISSUED_AT:  # also refuses NaN
            raise ValueError(f"cannot mint a session ID issued at {now!r}")
        # randbelow draws uniformly (rejection sampling), where 25 characters picked from
        # reduced random bytes would favour some of them.
        head = _base36(secrets.randbelow(_RANDOM_SPACE), RANDOM_LENGTH)
        head += _base36(int(now), TIME_LENGTH)
        return head + self._tag(self._hashers[0], head.encode("ascii"))

    def check(self, session_id: object) -> IdCheck:
        """Classify ``session_id`` (a cookie value, or anything else); never raises.

        * ``"malformed"``: not a ``str``, or not 8 to 64 characters of ``[a-z0-9]``: no
          engine would accept it as a key;
        * ``"unsigned"``: a valid key of another length than :data:`SIGNED_ID_LENGTH`
          (a legacy ID: only the store can tell whether it exists);
        * ``"forged"``: a valid key of the signed length whose tag does not verify under
          any key (altered, made up, or minted under another ``SECRET_KEY``);
        * ``"signed"``: minted by us under one of the keys, issued at ``issued_at``.
        """
        if type(session_id) is not str:
            if not isinstance(session_id, str):
                return _MALFORMED
            # A subclass may override len(), slicing or comparison: look at the plain text.
            session_id = str.__str__(session_id)
        # Length and ASCII first: both are O(1), so a 10 MB or non-ASCII cookie costs no
        # scan and no hashing.
        length = len(session_id)
        if not MIN_ID_LENGTH <= length <= MAX_ID_LENGTH or not session_id.isascii():
            return _MALFORMED
        raw = session_id.encode("ascii")
        # Nothing may be left once the allowed characters are deleted: [a-z0-9] in one C
        # loop over bytes, at half the cost of the regex.
        if raw.translate(None, _ALPHABET_BYTES):
            return _MALFORMED
        if length != SIGNED_ID_LENGTH:
            return _UNSIGNED
        signed = raw[:SIGNED_LENGTH]
        tag = session_id[SIGNED_LENGTH:]
        for hasher in self._hashers:
            h = hasher.copy()  # inlined _tag(): this is the hot path of every request
            h.update(signed)
            # Both are ASCII str, which compare_digest compares in constant time; a tag
            # holding letters past "f" is simply never equal to a hex digest.
            if _compare_digest(tag, h.hexdigest()):
                # Every [a-z0-9] string is valid base 36: int() cannot raise. The tuple is
                # built directly, skipping the NamedTuple's Python-level __new__.
                issued_at = float(int(session_id[RANDOM_LENGTH:SIGNED_LENGTH], 36))
                return _new_tuple(IdCheck, ("signed", issued_at))
        return _FORGED
