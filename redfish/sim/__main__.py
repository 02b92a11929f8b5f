"""``python -m redfish.sim SOCKET_PATH JSON_REQUEST``: talk to a running fleet's control socket."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from redfish.sim.control import send_control


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m redfish.sim SOCKET_PATH JSON_REQUEST", file=sys.stderr)
        return 2
    try:
        answer = send_control(args[0], json.loads(args[1]))
    except (OSError, ValueError) as exc:
        print(f"control: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
