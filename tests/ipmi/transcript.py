"""Record and replay ClientSession conversations with real BMCs.

A transcript holds every entropy draw the client made and every datagram each side sent,
so replaying it through a fresh ClientSession must reproduce the client's datagrams byte
for byte and accept the real BMC's answers: the crypto is then proven against an
independent implementation without the peer running. Credentials in transcripts are test
credentials of throw-away simulators.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipmi.proto.constants import Privilege
from ipmi.proto.events import Event, LoginComplete, LoginStep, Response
from ipmi.proto.session import ClientSession

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"

# What the recorded conversation does after login: (netfn, cmd, data) requests.
SCRIPT: list[tuple[int, int, bytes]] = [
    (0x00, 0x01, b""),  # Get Chassis Status
    (0x00, 0x02, b"\x01"),  # Chassis Control: power up
    (0x00, 0x01, b""),  # Get Chassis Status
    (0x06, 0x01, b""),  # Get Device ID
]


def describe(event: Event | None) -> Any:
    if isinstance(event, LoginStep):
        return "login-step"
    if isinstance(event, LoginComplete):
        return ["login-complete", event.suite, int(event.privilege)]
    if isinstance(event, Response):
        return ["response", event.netfn, event.cmd, event.completion_code, event.data.hex()]
    return None


def record(
    host: str,
    port: int,
    *,
    peer: str,
    username: str,
    password: str,
    suites: tuple[int, ...],
    entropy: Callable[[int], bytes],
    timeout: float = 2.0,
) -> dict[str, Any]:
    """Run login + SCRIPT + close against a live BMC over a blocking UDP socket."""
    draws: list[str] = []

    def recording_entropy(count: int) -> bytes:
        value = entropy(count)
        draws.append(value.hex())
        return value

    session = ClientSession(
        username=username.encode(),
        password=password.encode(),
        privilege=Privilege.ADMINISTRATOR,
        cipher_suites=suites,
        entropy=recording_entropy,
    )
    exchanges: list[dict[str, Any]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(timeout)

        def exchange(call: list[Any], datagram: bytes) -> Event:
            sock.send(datagram)
            received: list[str] = []
            events: list[Any] = []
            event: Event | None = None
            while event is None:
                reply = sock.recv(4096)
                received.append(reply.hex())
                event = session.receive(reply)
                events.append(describe(event))
            exchanges.append(
                {"call": call, "sent": datagram.hex(), "received": received, "events": events}
            )
            return event

        event = exchange(["begin_login"], session.begin_login())
        while isinstance(event, LoginStep):
            event = exchange(["step"], event.datagram)
        assert isinstance(event, LoginComplete), event
        for netfn, cmd, data in SCRIPT:
            _, datagram = session.request(netfn, cmd, data)
            exchange(["request", netfn, cmd, data.hex()], datagram)
        closing = session.close()
        exchanges.append({"call": ["close"], "sent": closing.hex(), "received": [], "events": []})
        sock.send(closing)
    return {
        "peer": peer,
        "username": username,
        "password": password,
        "suites": list(suites),
        "entropy": draws,
        "exchanges": exchanges,
    }


def save(transcript: dict[str, Any], name: str) -> Path:
    path = TRANSCRIPTS / f"{name}.json"
    path.write_text(json.dumps(transcript, indent=1) + "\n")
    return path


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((TRANSCRIPTS / f"{name}.json").read_text())
    return loaded


def replay(transcript: dict[str, Any]) -> ClientSession:
    """Replay through a fresh ClientSession; AssertionError on the first divergence."""
    draws = iter(bytes.fromhex(draw) for draw in transcript["entropy"])

    def entropy(count: int) -> bytes:
        value = next(draws)
        assert len(value) == count
        return value

    session = ClientSession(
        username=transcript["username"].encode(),
        password=transcript["password"].encode(),
        privilege=Privilege.ADMINISTRATOR,
        cipher_suites=tuple(transcript["suites"]),
        entropy=entropy,
    )
    next_step = b""
    for number, item in enumerate(transcript["exchanges"]):
        call = item["call"]
        if call[0] == "begin_login":
            datagram = session.begin_login()
        elif call[0] == "step":
            datagram = next_step
        elif call[0] == "request":
            _, datagram = session.request(call[1], call[2], bytes.fromhex(call[3]))
        else:
            datagram = session.close()
        assert datagram.hex() == item["sent"], f"exchange {number} ({call[0]}) differs"
        for reply, expected in zip(item["received"], item["events"], strict=True):
            event = session.receive(bytes.fromhex(reply))
            if event is None and session.drops["forged"]:
                session.login_step_timed_out()  # as a driver whose step wait then expires
            assert describe(event) == expected, f"exchange {number}: {event!r}"
            if isinstance(event, LoginStep):
                next_step = event.datagram
    assert next(draws, None) is None, "entropy left over"
    return session
