"""What the daemon imports: an IPMI-only agent carries no Redfish client, TLS or HTTP code.

Every module and object imported at start stays on the heap, where each full garbage
collection walks it: with the Redfish client (h11, ssl) loaded eagerly, the sync cycle of
1,000 IPMI BMCs cost a fifth more CPU.
"""

from __future__ import annotations

import subprocess
import sys

from tests.agent.test_e2e_sim import ROOT

PROBE = """
import sys
import agent.sync.daemon, agent.drivers, agent.config.nodes
print(sorted(m for m in ("redfish.client", "redfish.tls", "h11", "httpx") if m in sys.modules))
import redfish
redfish.open_redfish  # first use
print("redfish.client" in sys.modules)
"""


def test_the_redfish_client_is_imported_only_when_used() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["[]", "True"], result.stdout + result.stderr
