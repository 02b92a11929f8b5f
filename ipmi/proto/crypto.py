"""RMCP+ cryptography for cipher suites 3 and 17, usable by the client and the BMC side.

Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
Nothing else is offered or accepted: suite 0 and every "none" algorithm are refused.

Names follow the specification's RAKP description, from the console's point of view:
console = remote console (the client), bmc = managed system. Session ids enter the HMAC
inputs little-endian, exactly as on the wire. Passwords and K_G are used as HMAC keys as
given: zero-padding a key shorter than the hash block (as the spec's 20-byte buffers do)
does not change an HMAC.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Iterable

import attrs
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ipmi.errors import IntegrityCheckError, MalformedPacketError, NegotiationError
from ipmi.proto.constants import AuthAlgorithm, ConfidentialityAlgorithm, IntegrityAlgorithm
from ipmi.proto.wire import V2Packet, decode_v2, encode_v2

AES_BLOCK = 16
_SESSION_ID = struct.Struct("<I")


@attrs.frozen
class CipherSuite:
    """One supported cipher suite and the lengths its algorithms imply."""

    id: int
    auth: AuthAlgorithm
    integrity: IntegrityAlgorithm
    confidentiality: ConfidentialityAlgorithm
    hash_name: str  # of the RAKP HMAC and the integrity HMAC
    digest_length: int  # RAKP2/RAKP3 codes, SIK, K1, K2
    rakp4_icv_length: int  # the RAKP4 integrity check value is truncated to this
    integrity_length: int  # per-packet auth code length

    @property
    def algorithms(self) -> tuple[int, int, int]:
        return (int(self.auth), int(self.integrity), int(self.confidentiality))


SUITE_3 = CipherSuite(
    3,
    AuthAlgorithm.RAKP_HMAC_SHA1,
    IntegrityAlgorithm.HMAC_SHA1_96,
    ConfidentialityAlgorithm.AES_CBC_128,
    "sha1",
    20,
    12,
    12,
)
SUITE_17 = CipherSuite(
    17,
    AuthAlgorithm.RAKP_HMAC_SHA256,
    IntegrityAlgorithm.HMAC_SHA256_128,
    ConfidentialityAlgorithm.AES_CBC_128,
    "sha256",
    32,
    16,
    16,
)
SUPPORTED_SUITES: dict[int, CipherSuite] = {3: SUITE_3, 17: SUITE_17}


def cipher_suite(suite_id: int) -> CipherSuite:
    """The suite with this id; NegotiationError for any unsupported one (0 included)."""
    try:
        return SUPPORTED_SUITES[suite_id]
    except KeyError:
        raise NegotiationError(
            f"cipher suite {suite_id} is not supported (only 3 and 17 are allowed)"
        ) from None


def cipher_suites(suite_ids: Iterable[int]) -> tuple[CipherSuite, ...]:
    """Validate a preference list: non-empty, no duplicates, only 3 and 17."""
    suites = tuple(cipher_suite(int(suite_id)) for suite_id in suite_ids)
    if not suites:
        raise NegotiationError("no cipher suite configured")
    if len({suite.id for suite in suites}) != len(suites):
        raise NegotiationError("cipher suite listed twice")
    return suites


def suite_by_algorithms(auth: int, integrity: int, confidentiality: int) -> CipherSuite | None:
    """The supported suite made of exactly these algorithms, else None."""
    for suite in SUPPORTED_SUITES.values():
        if suite.algorithms == (auth, integrity, confidentiality):
            return suite
    return None


def _hmac(suite: CipherSuite, key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), suite.hash_name).digest()


def _role_and_name(role: int, username: bytes) -> bytes:
    return bytes((role & 0xFF, len(username))) + username


def rakp2_key_exchange_code(
    suite: CipherSuite,
    password: bytes,
    *,
    console_session_id: int,
    bmc_session_id: int,
    console_random: bytes,
    bmc_random: bytes,
    bmc_guid: bytes,
    role: int,
    username: bytes,
) -> bytes:
    """HMAC_K_UID(SIDm | SIDc | Rm | Rc | GUIDc | ROLEm | ULENGTHm | UNAMEm): the BMC proves
    it knows the password."""
    return _hmac(
        suite,
        password,
        _SESSION_ID.pack(console_session_id),
        _SESSION_ID.pack(bmc_session_id),
        console_random,
        bmc_random,
        bmc_guid,
        _role_and_name(role, username),
    )


def rakp3_key_exchange_code(
    suite: CipherSuite,
    password: bytes,
    *,
    bmc_random: bytes,
    console_session_id: int,
    role: int,
    username: bytes,
) -> bytes:
    """HMAC_K_UID(Rc | SIDm | ROLEm | ULENGTHm | UNAMEm): the console proves it knows it."""
    return _hmac(
        suite,
        password,
        bmc_random,
        _SESSION_ID.pack(console_session_id),
        _role_and_name(role, username),
    )


def session_integrity_key(
    suite: CipherSuite,
    kg: bytes,
    *,
    console_random: bytes,
    bmc_random: bytes,
    role: int,
    username: bytes,
) -> bytes:
    """SIK = HMAC_K_G(Rm | Rc | ROLEm | ULENGTHm | UNAMEm); K_G is the password when unset."""
    return _hmac(suite, kg, console_random, bmc_random, _role_and_name(role, username))


ADDITIONAL_KEY_CONSTANT_LENGTH = 20


def additional_key(suite: CipherSuite, sik: bytes, number: int) -> bytes:
    """K_n = HMAC_SIK(n repeated 20 times): K1 keys integrity, K2 encryption.

    The constant is 20 bytes for every suite, SHA-256 included: ipmitool -C 17 and
    ipmipower -I 17 both derive K1/K2 that way (checked against the simulator)."""
    return _hmac(suite, sik, bytes((number,)) * ADDITIONAL_KEY_CONSTANT_LENGTH)


def rakp4_integrity_check_value(
    suite: CipherSuite, sik: bytes, *, console_random: bytes, bmc_session_id: int, bmc_guid: bytes
) -> bytes:
    """HMAC_SIK(Rm | SIDc | GUIDc), truncated: the BMC proves it derived the same SIK."""
    full = _hmac(suite, sik, console_random, _SESSION_ID.pack(bmc_session_id), bmc_guid)
    return full[: suite.rakp4_icv_length]


def codes_match(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of authentication codes."""
    return hmac.compare_digest(expected, received)


def confidentiality_pad(length: int) -> bytes:
    """The AES-CBC-128 pad for ``length`` plaintext bytes: 1, 2, ... n then n."""
    count = -(length + 1) % AES_BLOCK
    return bytes(range(1, count + 1)) + bytes((count,))


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """IV followed by AES-CBC-128(plaintext + confidentiality pad)."""
    if len(iv) != AES_BLOCK:
        raise ValueError("the AES-CBC IV must be 16 bytes")
    return _encrypt(algorithms.AES(key[:AES_BLOCK]), iv, plaintext)


def _encrypt(aes: algorithms.AES, iv: bytes, plaintext: bytes) -> bytes:
    encryptor = Cipher(aes, modes.CBC(iv)).encryptor()
    padded = plaintext + confidentiality_pad(len(plaintext))
    return iv + encryptor.update(padded) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, payload: bytes) -> bytes:
    """Inverse of :func:`aes_cbc_encrypt`; MalformedPacketError on a bad length or pad."""
    return _decrypt(algorithms.AES(key[:AES_BLOCK]), payload)


def _decrypt(aes: algorithms.AES, payload: bytes) -> bytes:
    if len(payload) < 2 * AES_BLOCK or len(payload) % AES_BLOCK:
        raise MalformedPacketError("encrypted payload length is not IV + whole AES blocks")
    decryptor = Cipher(aes, modes.CBC(payload[:AES_BLOCK])).decryptor()
    padded = decryptor.update(payload[AES_BLOCK:]) + decryptor.finalize()
    count = padded[-1]
    if count >= AES_BLOCK or padded[-1 - count : -1] != bytes(range(1, count + 1)):
        raise MalformedPacketError("bad AES-CBC confidentiality pad")
    return padded[: -1 - count]


class SessionCrypto:
    """The keys of one established session (K1 for integrity, K2 for AES-CBC-128).

    ``seal`` produces an encrypted, authenticated datagram; ``verify`` checks a datagram's
    integrity before anything in its payload is looked at; ``decrypt`` then opens it.

    Thousands of these live at once, so only K1 (bytes) and an AES key object are kept:
    a keyed HMAC object to copy per packet is 0.5 us faster but holds ~750 bytes of
    OpenSSL state per session, and reusable AES contexts would hold ~1.8 KB.
    """

    __slots__ = ("_aes", "_entropy", "_hash_name", "_integrity_length", "_k1", "suite")

    def __init__(self, suite: CipherSuite, sik: bytes, entropy: Callable[[int], bytes]) -> None:
        self.suite = suite
        self._entropy = entropy
        self._hash_name = suite.hash_name
        self._integrity_length = suite.integrity_length
        self._k1 = additional_key(suite, sik, 1)
        self._aes = algorithms.AES(additional_key(suite, sik, 2)[:AES_BLOCK])

    def __repr__(self) -> str:
        return f"<SessionCrypto suite {self.suite.id}>"

    def mac(self, signed: bytes) -> bytes:
        """The truncated integrity code over ``signed`` (auth type .. next header)."""
        return hmac.digest(self._k1, signed, self._hash_name)[: self._integrity_length]

    def authentic(self, signed: bytes, auth_code: bytes) -> bool:
        """Whether ``auth_code`` is the integrity code of ``signed`` (constant time)."""
        return codes_match(self.mac(signed), auth_code)

    def encrypt(self, plaintext: bytes) -> bytes:
        iv = self._entropy(AES_BLOCK)
        if len(iv) != AES_BLOCK:
            raise ValueError("entropy source returned the wrong number of bytes")
        return _encrypt(self._aes, iv, plaintext)

    def decrypt(self, payload: bytes) -> bytes:
        return _decrypt(self._aes, payload)

    def seal(self, payload_type: int, session_id: int, sequence: int, payload: bytes) -> bytes:
        """An encrypted and authenticated RMCP+ datagram carrying ``payload``."""
        return encode_v2(
            payload_type,
            self.encrypt(payload),
            session_id=session_id,
            sequence=sequence,
            encrypted=True,
            mac=self.mac,
        )

    def verify(self, datagram: bytes) -> V2Packet:
        """Split and integrity-check an authenticated datagram (payload still encrypted).

        MalformedPacketError if it is not an authenticated RMCP+ packet of the right shape,
        IntegrityCheckError if the code does not verify."""
        packet = decode_v2(datagram, self._integrity_length)
        if not packet.authenticated:
            raise MalformedPacketError("packet is not authenticated")
        if not self.authentic(packet.signed, packet.auth_code):
            raise IntegrityCheckError("integrity check failed")
        return packet

    def open(self, datagram: bytes) -> tuple[V2Packet, bytes]:
        """verify + decrypt: (packet, plaintext payload). Unencrypted payloads are refused."""
        packet = self.verify(datagram)
        if not packet.encrypted:
            raise MalformedPacketError("packet is not encrypted")
        return packet, self.decrypt(packet.payload)
