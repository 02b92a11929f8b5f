"""The protocol-neutral BMC seam (:mod:`.seam`) and the pool of sessions built on it
(:mod:`.pool`, :mod:`.gate`). Nothing here knows a protocol: drivers live in
:mod:`agent.drivers`."""
