"""``python -m ipmi.sim SOCKET_PATH JSON_REQUEST``: talk to a running fleet's control socket."""

import sys

from simcore.control import control_main

if __name__ == "__main__":
    sys.exit(control_main(None, program="ipmi.sim"))
