"""ClientSession (sans-I/O, over a plain blocking socket) against real BMC software.

This proves the protocol core alone, independent of the trio transport: ipmi_sim (OpenIPMI)
and pyghmi's BMC both speak suite 3 only, so a [17, 3] preference must fall back; the stock
pyghmi server answers suite-3 algorithms to a suite-17 proposal, which must not be taken.
Run ``python -m tests.ipmi.test_proto_peers`` to re-record the replay transcripts.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from ipmi.errors import AuthenticationError, NegotiationError
from ipmi.proto.session import ClientSession
from tests.conftest import require_module, require_tool
from tests.ipmi import transcript

pytestmark = pytest.mark.peers

PASSWORD = "s3cret-pw"


def check_conversation(recorded: dict[str, object]) -> None:
    exchanges = recorded["exchanges"]
    assert isinstance(exchanges, list)
    events = [event for item in exchanges for event in item["events"] if event]
    login = next(event for event in events if event != "login-step")
    assert login == ["login-complete", 3, 4]
    responses = [event for event in events if isinstance(event, list) and event[0] == "response"]
    assert [r[1:4] for r in responses] == [[1, 1, 0], [1, 2, 0], [1, 1, 0], [7, 1, 0]]
    assert int(responses[0][4][:2], 16) & 1 == 0  # off before
    assert int(responses[2][4][:2], 16) & 1 == 1  # on after power up
    # and replaying the real conversation through a fresh session reproduces it exactly
    transcript.replay(recorded)  # type: ignore[arg-type]


def wrong_password(host: str, port: int) -> None:
    session = ClientSession(
        username=b"admin", password=b"not-it", cipher_suites=(3,), entropy=os.urandom
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(0.5)
        datagram = session.begin_login()
        with pytest.raises(AuthenticationError):
            for _ in range(10):
                sock.send(datagram)
                event = None
                while event is None:
                    try:
                        event = session.receive(sock.recv(4096))
                    except TimeoutError:
                        # The step's wait expired: only an RAKP2 that did not verify came.
                        session.login_step_timed_out()
                        raise
                datagram = event.datagram  # type: ignore[union-attr]


def test_ipmi_sim(tmp_path: Path) -> None:
    require_tool("ipmi_sim")
    from tests.peers.ipmi_sim import ipmi_sim_fleet

    with ipmi_sim_fleet(1, directory=tmp_path, password=PASSWORD) as bmcs:
        bmc = bmcs[0]
        recorded = transcript.record(
            bmc.host,
            bmc.port,
            peer="ipmi_sim",
            username="admin",
            password=PASSWORD,
            suites=(17, 3),
            entropy=os.urandom,
        )
        check_conversation(recorded)
        assert bmc.power_on
        wrong_password(bmc.host, bmc.port)


@pytest.mark.parametrize("accept_any_cipher", [False, True], ids=["lab", "stock"])
def test_pyghmi_bmc(tmp_path: Path, accept_any_cipher: bool) -> None:
    require_module("pyghmi")
    from tests.peers.pyghmi_bmc import pyghmi_bmc_fleet

    with pyghmi_bmc_fleet(
        1, directory=tmp_path, password=PASSWORD, accept_any_cipher=accept_any_cipher
    ) as fleet:
        bmc = fleet.bmcs[0]
        recorded = transcript.record(
            bmc.host,
            bmc.port,
            peer="pyghmi",
            username="admin",
            password=PASSWORD,
            suites=(17, 3),
            entropy=os.urandom,
        )
        check_conversation(recorded)
        opens = [item for item in recorded["exchanges"] if item["sent"][8:12] == "0610"]
        assert len(opens) == 2  # suite 17 refused or mis-answered, then suite 3
        with pytest.raises(NegotiationError):
            transcript.replay({**recorded, "suites": [17]})
        wrong_password(bmc.host, bmc.port)


def _record_all() -> None:  # pragma: no cover - a developer tool
    from tests.peers.ipmi_sim import ipmi_sim_fleet
    from tests.peers.pyghmi_bmc import pyghmi_bmc_fleet

    with tempfile.TemporaryDirectory() as tmp:
        with ipmi_sim_fleet(1, directory=Path(tmp), password=PASSWORD) as bmcs:
            bmc = bmcs[0]
            recorded = transcript.record(
                bmc.host,
                bmc.port,
                peer="ipmi_sim (openipmi 2.0.33)",
                username="admin",
                password=PASSWORD,
                suites=(17, 3),
                entropy=os.urandom,
            )
            print(transcript.save(recorded, "ipmi_sim_suite3"))
        with pyghmi_bmc_fleet(
            1, directory=Path(tmp) / "pyghmi", password=PASSWORD, accept_any_cipher=True
        ) as fleet:
            bmc = fleet.bmcs[0]
            recorded = transcript.record(
                bmc.host,
                bmc.port,
                peer="pyghmi 1.6 Bmc, stock cipher answer",
                username="admin",
                password=PASSWORD,
                suites=(17, 3),
                entropy=os.urandom,
            )
            print(transcript.save(recorded, "pyghmi_stock_suite3"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_record_all())
