"""The edge client's own Ed25519 verifier (scaleoututil.ed25519) against OpenSSL's (via `cryptography`,
which the dev install has): the same answer on valid, altered and malleated signatures, and clear errors
for keys that are not Ed25519 points."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scaleoututil import ed25519

pytestmark = pytest.mark.timeout(60)


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_verifies_what_openssl_signs_and_refuses_any_changed_byte() -> None:
    for i in range(12):
        private = Ed25519PrivateKey.generate()
        key = ed25519.public_key_from_pem(public_pem(private))
        message = os.urandom(i * 37)
        signature = private.sign(message)
        key.verify(signature, message)
        with pytest.raises(ed25519.BadSignature):
            key.verify(signature, message + b"\0")
        for position in (0, 31, 32, 63):
            altered = bytearray(signature)
            altered[position] ^= 0x01
            with pytest.raises(ed25519.BadSignature):
                key.verify(bytes(altered), message)


def test_signature_of_another_key_is_refused() -> None:
    signer, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(ed25519.BadSignature, match="does not match"):
        ed25519.public_key_from_pem(public_pem(other)).verify(signer.sign(b"package"), b"package")


def test_malleated_signature_with_s_plus_group_order_is_refused() -> None:
    private = Ed25519PrivateKey.generate()
    signature = private.sign(b"m")
    s = int.from_bytes(signature[32:], "little") + ed25519.L
    malleated = signature[:32] + s.to_bytes(32, "little")
    with pytest.raises(ed25519.BadSignature, match="group order"):
        ed25519.public_key_from_pem(public_pem(private)).verify(malleated, b"m")


def test_wrong_lengths_and_non_points_are_clear_errors() -> None:
    key = ed25519.public_key_from_pem(public_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(ed25519.BadSignature, match="64 bytes"):
        key.verify(b"\0" * 63, b"m")
    y = next(y for y in range(2, 100) if not _is_point(y))
    with pytest.raises(ed25519.BadKey, match="no curve point"):
        ed25519.PublicKey(y.to_bytes(32, "little"))
    with pytest.raises(ed25519.BadKey, match="below 2\\^255 - 19"):
        ed25519.PublicKey((2**255 - 1).to_bytes(32, "little"))


def test_pem_of_another_kind_of_key_or_no_pem_is_refused() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ed25519.BadKey, match="not an Ed25519 public key"):
        ed25519.public_key_from_pem(ec_pem)
    with pytest.raises(ValueError, match="BEGIN PUBLIC KEY"):
        ed25519.public_key_from_pem(b"hello")


def _is_point(y: int) -> bool:
    try:
        ed25519.PublicKey(y.to_bytes(32, "little"))
    except ed25519.BadKey:
        return False
    return True
