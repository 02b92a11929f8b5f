"""The sans-I/O IPMI v2.0 (RMCP+) protocol core: bytes in, events and bytes out.

- ``constants``: the specification's numbers, named.
- ``wire``: RMCP, ASF ping/pong, IPMI 1.5 and 2.0 session wrappers, LAN messages.
- ``messages``: Open Session, RAKP 1-4 and the IPMI commands, both directions.
- ``crypto``: cipher suites 3 and 17, RAKP codes, SIK/K1/K2, ``SessionCrypto``.
- ``session``: ``ClientSession``, the client's login and session state machine.
- ``server``: the BMC side (owned by the simulator).

Nothing here imports trio, socket, time, os, secrets or random: entropy and clocks are
passed in, so every test is deterministic. Decoders raise only MalformedPacketError.
"""
