"""The edge client's Ed25519 verifier (scaleoututil.ed25519: libsodium through PyNaCl) against what OpenSSL
signs (via `cryptography`, which the dev install has): valid signatures pass; altered, malleated and
other keys' signatures fail with clear errors, and so do keys that are no usable points."""

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


def test_wrong_lengths_and_keys_that_are_no_points_are_refused() -> None:
    key = ed25519.public_key_from_pem(public_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(ed25519.BadSignature, match="64 bytes"):
        key.verify(b"\0" * 63, b"m")
    with pytest.raises(ed25519.BadKey, match="32 bytes"):
        ed25519.PublicKey(b"\1" * 31)
    # the identity point (a small-order key) would "verify" a forged signature with a lax check
    signature = bytes([1]) + bytes(31) + bytes(32)
    with pytest.raises(ed25519.BadSignature):
        ed25519.PublicKey(bytes([1]) + bytes(31)).verify(signature, b"m")


def test_pem_of_another_kind_of_key_or_no_pem_is_refused() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ed25519.BadKey, match="not an Ed25519 public key"):
        ed25519.public_key_from_pem(ec_pem)
    with pytest.raises(ValueError, match="BEGIN PUBLIC KEY"):
        ed25519.public_key_from_pem(b"hello")
