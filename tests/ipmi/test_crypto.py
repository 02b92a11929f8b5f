"""Crypto vectors for suites 3 and 17.

Expected values are computed here straight from the specification's formulas with
hashlib/hmac/cryptography, never by calling the code under test, and a few are pinned as
literals so a change in the formulas themselves would show.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ipmi.errors import IntegrityCheckError, MalformedPacketError, NegotiationError
from ipmi.proto import crypto, wire
from tests.ipmi import vectors as v

SIK_SHA1_HEX = "122c77c4b11ccd93251cbae6c34a9cb6310da154"
SIK_SHA256_HEX = "e5935f7199865ad961063477b0662684e2ce9b1da8f2b8d41c5ce127d37e9bcf"
SUITES = [(crypto.SUITE_3, hashlib.sha1, 12), (crypto.SUITE_17, hashlib.sha256, 16)]


def le32(value: int) -> bytes:
    return struct.pack("<I", value)


def spec_sik(hash_fn: object, key: bytes) -> bytes:
    data = v.CONSOLE_RANDOM + v.BMC_RANDOM + bytes((v.ROLE_ADMIN_NAME_ONLY, 5)) + v.USERNAME
    return hmac.new(key, data, hash_fn).digest()  # type: ignore[arg-type]


def test_suite_table() -> None:
    assert crypto.SUITE_3.algorithms == (1, 1, 1)
    assert crypto.SUITE_17.algorithms == (3, 4, 1)
    assert crypto.suite_by_algorithms(3, 4, 1) is crypto.SUITE_17
    assert crypto.suite_by_algorithms(1, 1, 0) is None  # no confidentiality: never
    assert crypto.suite_by_algorithms(0, 0, 0) is None


@pytest.mark.parametrize("suite_id", [0, 1, 2, 6, 8, 12, 15, 16, -1])
def test_only_suites_3_and_17_exist(suite_id: int) -> None:
    with pytest.raises(NegotiationError):
        crypto.cipher_suite(suite_id)


def test_preference_list_validation() -> None:
    assert [s.id for s in crypto.cipher_suites([17, 3])] == [17, 3]
    for bad in ([], [3, 3], [17, 0]):
        with pytest.raises(NegotiationError):
            crypto.cipher_suites(bad)


@pytest.mark.parametrize(("suite", "hash_fn", "icv_length"), SUITES)
def test_rakp_codes_and_keys_match_spec_formulas(
    suite: crypto.CipherSuite, hash_fn: object, icv_length: int
) -> None:
    role_name = bytes((v.ROLE_ADMIN_NAME_ONLY, len(v.USERNAME))) + v.USERNAME
    rakp2 = hmac.new(
        v.PASSWORD,
        le32(v.CONSOLE_SESSION_ID)
        + le32(v.BMC_SESSION_ID)
        + v.CONSOLE_RANDOM
        + v.BMC_RANDOM
        + v.BMC_GUID
        + role_name,
        hash_fn,  # type: ignore[arg-type]
    ).digest()
    assert (
        crypto.rakp2_key_exchange_code(
            suite,
            v.PASSWORD,
            console_session_id=v.CONSOLE_SESSION_ID,
            bmc_session_id=v.BMC_SESSION_ID,
            console_random=v.CONSOLE_RANDOM,
            bmc_random=v.BMC_RANDOM,
            bmc_guid=v.BMC_GUID,
            role=v.ROLE_ADMIN_NAME_ONLY,
            username=v.USERNAME,
        )
        == rakp2
    )
    rakp3 = hmac.new(
        v.PASSWORD,
        v.BMC_RANDOM + le32(v.CONSOLE_SESSION_ID) + role_name,
        hash_fn,  # type: ignore[arg-type]
    ).digest()
    assert (
        crypto.rakp3_key_exchange_code(
            suite,
            v.PASSWORD,
            bmc_random=v.BMC_RANDOM,
            console_session_id=v.CONSOLE_SESSION_ID,
            role=v.ROLE_ADMIN_NAME_ONLY,
            username=v.USERNAME,
        )
        == rakp3
    )
    sik = spec_sik(hash_fn, v.PASSWORD)
    assert (
        crypto.session_integrity_key(
            suite,
            v.PASSWORD,
            console_random=v.CONSOLE_RANDOM,
            bmc_random=v.BMC_RANDOM,
            role=v.ROLE_ADMIN_NAME_ONLY,
            username=v.USERNAME,
        )
        == sik
    )
    # 20-byte constants for both suites (what ipmitool -C 17 and ipmipower -I 17 use)
    k1 = hmac.new(sik, b"\x01" * 20, hash_fn).digest()  # type: ignore[arg-type]
    k2 = hmac.new(sik, b"\x02" * 20, hash_fn).digest()  # type: ignore[arg-type]
    assert crypto.additional_key(suite, sik, 1) == k1
    assert crypto.additional_key(suite, sik, 2) == k2
    icv = hmac.new(
        sik,
        v.CONSOLE_RANDOM + le32(v.BMC_SESSION_ID) + v.BMC_GUID,
        hash_fn,  # type: ignore[arg-type]
    ).digest()[:icv_length]
    assert (
        crypto.rakp4_integrity_check_value(
            suite,
            sik,
            console_random=v.CONSOLE_RANDOM,
            bmc_session_id=v.BMC_SESSION_ID,
            bmc_guid=v.BMC_GUID,
        )
        == icv
    )


def test_pinned_literals() -> None:
    """Literals (computed once with hmac) pin the SIK formula for suites 3 and 17."""
    sha1 = spec_sik(hashlib.sha1, v.PASSWORD)
    sha256 = spec_sik(hashlib.sha256, v.PASSWORD)
    assert len(sha1) == 20 and len(sha256) == 32
    assert sha1.hex() == SIK_SHA1_HEX
    assert sha256.hex() == SIK_SHA256_HEX
    for suite, expected in ((crypto.SUITE_3, SIK_SHA1_HEX), (crypto.SUITE_17, SIK_SHA256_HEX)):
        sik = crypto.session_integrity_key(
            suite,
            v.PASSWORD,
            console_random=v.CONSOLE_RANDOM,
            bmc_random=v.BMC_RANDOM,
            role=v.ROLE_ADMIN_NAME_ONLY,
            username=v.USERNAME,
        )
        assert sik.hex() == expected


def test_kg_keys_the_sik_not_the_rakp_codes() -> None:
    suite = crypto.SUITE_17
    with_kg = crypto.session_integrity_key(
        suite,
        v.KG,
        console_random=v.CONSOLE_RANDOM,
        bmc_random=v.BMC_RANDOM,
        role=v.ROLE_ADMIN_NAME_ONLY,
        username=v.USERNAME,
    )
    assert with_kg == spec_sik(hashlib.sha256, v.KG) != spec_sik(hashlib.sha256, v.PASSWORD)


def test_zero_padded_password_gives_the_same_hmac() -> None:
    # The spec keys RAKP with a 20-byte zero-padded buffer; HMAC pads keys with zeros anyway.
    padded = v.PASSWORD.ljust(20, b"\x00")
    for hash_fn in (hashlib.sha1, hashlib.sha256):
        assert (
            hmac.new(padded, b"m", hash_fn).digest() == hmac.new(v.PASSWORD, b"m", hash_fn).digest()
        )


@pytest.mark.parametrize("length", [0, 1, 14, 15, 16, 17, 31, 32, 100])
def test_confidentiality_pad(length: int) -> None:
    pad = crypto.confidentiality_pad(length)
    count = pad[-1]
    assert (length + len(pad)) % 16 == 0 and count < 16
    assert pad[:-1] == bytes(range(1, count + 1))


@pytest.mark.parametrize("length", [0, 1, 15, 16, 30, 64])
def test_aes_cbc_matches_cryptography_directly(length: int) -> None:
    key = bytes(range(32))
    iv = bytes(range(100, 116))
    plaintext = bytes((i * 7) & 0xFF for i in range(length))
    count = (16 - (length + 1) % 16) % 16
    padded = plaintext + bytes(range(1, count + 1)) + bytes((count,))
    encryptor = Cipher(algorithms.AES(key[:16]), modes.CBC(iv)).encryptor()
    expected = iv + encryptor.update(padded) + encryptor.finalize()
    assert crypto.aes_cbc_encrypt(key, iv, plaintext) == expected
    assert crypto.aes_cbc_decrypt(key, expected) == plaintext


def test_aes_cbc_bad_pad_and_length() -> None:
    key = bytes(16)
    iv = bytes(16)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    bad = iv + encryptor.update(bytes(15) + b"\x10") + encryptor.finalize()  # count 16
    with pytest.raises(MalformedPacketError):
        crypto.aes_cbc_decrypt(key, bad)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    wrong_bytes = iv + encryptor.update(bytes(13) + b"\x09\x02\x02") + encryptor.finalize()
    with pytest.raises(MalformedPacketError):
        crypto.aes_cbc_decrypt(key, wrong_bytes)
    for length in (0, 16, 17, 40):
        with pytest.raises(MalformedPacketError):
            crypto.aes_cbc_decrypt(key, bytes(length))


class CountingEntropy:
    def __init__(self) -> None:
        self.counter = 0

    def __call__(self, count: int) -> bytes:
        self.counter += 1
        return bytes([self.counter]) * count


@pytest.mark.parametrize(("suite", "hash_fn", "icv_length"), SUITES)
def test_session_crypto_seal_matches_spec(
    suite: crypto.CipherSuite, hash_fn: object, icv_length: int
) -> None:
    sik = spec_sik(hash_fn, v.PASSWORD)
    k1 = hmac.new(sik, b"\x01" * 20, hash_fn).digest()  # type: ignore[arg-type]  # 20 for both
    k2 = hmac.new(sik, b"\x02" * 20, hash_fn).digest()  # type: ignore[arg-type]
    session = crypto.SessionCrypto(suite, sik, CountingEntropy())
    message = v.GET_CHASSIS_STATUS_REQUEST_SEQ5
    datagram = session.seal(0x00, v.BMC_SESSION_ID, 9, message)

    iv = b"\x01" * 16
    count = (16 - (len(message) + 1) % 16) % 16
    encryptor = Cipher(algorithms.AES(k2[:16]), modes.CBC(iv)).encryptor()
    payload = (
        iv
        + encryptor.update(message + bytes(range(1, count + 1)) + bytes((count,)))
        + encryptor.finalize()
    )
    header = b"\x06\xc0" + le32(v.BMC_SESSION_ID) + le32(9) + len(payload).to_bytes(2, "little")
    pad = (4 - (len(header) + len(payload) + 2) % 4) % 4
    signed = header + payload + b"\xff" * pad + bytes((pad, 7))
    auth_code = hmac.new(k1, signed, hash_fn).digest()[:icv_length]  # type: ignore[arg-type]
    assert datagram == wire.IPMI_RMCP_HEADER + signed + auth_code
    assert suite.integrity_length == icv_length

    packet, plaintext = session.open(datagram)
    assert plaintext == message and packet.sequence == 9


def test_session_crypto_rejects_tampering() -> None:
    sik = spec_sik(hashlib.sha256, v.PASSWORD)
    session = crypto.SessionCrypto(crypto.SUITE_17, sik, CountingEntropy())
    datagram = session.seal(0x00, 5, 1, b"hello")
    for index in range(4, len(datagram)):
        tampered = bytearray(datagram)
        tampered[index] ^= 0x01
        with pytest.raises(MalformedPacketError):  # IntegrityCheckError is a subclass
            session.verify(bytes(tampered))
    tampered = bytearray(datagram)
    tampered[20] ^= 0x80
    with pytest.raises(IntegrityCheckError):
        session.verify(bytes(tampered))
    other = crypto.SessionCrypto(crypto.SUITE_17, spec_sik(hashlib.sha256, v.KG), CountingEntropy())
    with pytest.raises(IntegrityCheckError):
        other.verify(datagram)
    unauthenticated = wire.encode_v2(0x00, b"hello", session_id=5, sequence=1)
    with pytest.raises(MalformedPacketError):
        session.verify(unauthenticated)
    plain = wire.encode_v2(0x00, b"hello", session_id=5, sequence=1, mac=session.mac)
    with pytest.raises(MalformedPacketError, match="not encrypted"):
        session.open(plain)


def test_session_crypto_repr_has_no_keys() -> None:
    session = crypto.SessionCrypto(crypto.SUITE_3, b"k" * 20, CountingEntropy())
    assert repr(session) == "<SessionCrypto suite 3>"


def test_codes_match() -> None:
    assert crypto.codes_match(b"abc", b"abc")
    assert not crypto.codes_match(b"abc", b"abd")
    assert not crypto.codes_match(b"abc", b"ab")
