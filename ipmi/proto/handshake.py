"""The console's side of one RAKP handshake: its nonces and the codes that prove each side.

:class:`Handshake` lives from ``begin_login`` until the session keys exist, then the
session machine (``ipmi.proto.session``) drops it, and with it the nonces, the BMC's GUID
and the SIK: an agent holds one session per node for days, and needs none of them after
login. Pure computation over ``ipmi.proto.crypto``; the machine decides what to do with a
code that does not verify.
"""

from __future__ import annotations

from collections.abc import Callable

from ipmi.proto import messages as msg
from ipmi.proto.crypto import (
    CipherSuite,
    SessionCrypto,
    codes_match,
    rakp2_key_exchange_code,
    rakp3_key_exchange_code,
    rakp4_integrity_check_value,
    session_integrity_key,
)


class Handshake:
    """One login run's secrets. ``role`` is the RAKP1 role byte exactly as sent."""

    __slots__ = (
        "_bmc_guid",
        "_bmc_random",
        "_kg",
        "_password",
        "_sik",
        "_username",
        "console_random",
        "role",
    )

    def __init__(
        self,
        *,
        username: bytes,
        password: bytes,
        kg: bytes | None,
        role: int,
        console_random: bytes,
    ) -> None:
        self._username = username
        self._password = password
        self._kg = kg
        self.role = role
        self.console_random = console_random
        self._bmc_random = b""
        self._bmc_guid = b""
        self._sik = b""

    def __repr__(self) -> str:  # never a nonce, key or the password
        return f"<Handshake role=0x{self.role:02x} keyed={bool(self._sik)}>"

    def rakp1(self, tag: int, bmc_session_id: int) -> msg.Rakp1:
        return msg.Rakp1(tag, bmc_session_id, self.console_random, self.role, self._username)

    def rakp2_verifies(
        self,
        suite: CipherSuite,
        rakp2: msg.Rakp2,
        *,
        console_session_id: int,
        bmc_session_id: int,
    ) -> bool:
        """True when RAKP2's key exchange code proves the BMC knows the password."""
        expected = rakp2_key_exchange_code(
            suite,
            self._password,
            console_session_id=console_session_id,
            bmc_session_id=bmc_session_id,
            console_random=self.console_random,
            bmc_random=rakp2.bmc_random,
            bmc_guid=rakp2.bmc_guid,
            role=self.role,
            username=self._username,
        )
        return codes_match(expected, rakp2.key_exchange_code)

    def accept_rakp2(
        self, suite: CipherSuite, rakp2: msg.Rakp2, *, console_session_id: int
    ) -> bytes:
        """Take a verified RAKP2's nonce and GUID, derive the SIK; the RAKP3 code."""
        self._bmc_random = rakp2.bmc_random
        self._bmc_guid = rakp2.bmc_guid
        self._sik = session_integrity_key(
            suite,
            self._kg if self._kg is not None else self._password,
            console_random=self.console_random,
            bmc_random=self._bmc_random,
            role=self.role,
            username=self._username,
        )
        return rakp3_key_exchange_code(
            suite,
            self._password,
            bmc_random=self._bmc_random,
            console_session_id=console_session_id,
            role=self.role,
            username=self._username,
        )

    def rakp4_verifies(self, suite: CipherSuite, rakp4: msg.Rakp4, *, bmc_session_id: int) -> bool:
        """True when RAKP4's integrity check value proves the BMC derived the same SIK."""
        expected = rakp4_integrity_check_value(
            suite,
            self._sik,
            console_random=self.console_random,
            bmc_session_id=bmc_session_id,
            bmc_guid=self._bmc_guid,
        )
        return codes_match(expected, rakp4.integrity_check_value)

    def session_crypto(self, suite: CipherSuite, entropy: Callable[[int], bytes]) -> SessionCrypto:
        """The keyed primitives of the session (K1, K2 from the SIK)."""
        return SessionCrypto(suite, self._sik, entropy)
