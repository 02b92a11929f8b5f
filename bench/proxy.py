"""A user-space UDP proxy that adds delay, jitter and loss (this kernel has no netem).

    python -m bench.proxy --count 50 --listen-base 21000 --target-base 20000 \
        --delay-ms 10 --jitter-ms 2 --loss 0.05 --seed 7

Clients send to ``listen_base + i``; the proxy forwards to ``target_base + i`` from one
upstream socket per client address, so replies find their way back. Delay and loss apply
independently in each direction. Prints ``ready`` once bound, and the datagram counts as one
JSON line when terminated (SIGTERM/SIGINT). Loopback only.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable


class Proxy:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)  # noqa: S311 -- loss pattern, not a secret
        self.selector = selectors.DefaultSelector()
        self.queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int] | None]] = []
        self.order = 0
        self.counts = {"to_bmc": 0, "from_bmc": 0, "lost": 0}
        self.upstreams: dict[tuple[int, tuple[str, int]], socket.socket] = {}
        self.running = True
        for index in range(args.count):
            front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            front.bind((args.listen_host, args.listen_base + index))
            front.setblocking(False)
            self.selector.register(front, selectors.EVENT_READ, self.front_reader(front, index))

    def front_reader(self, front: socket.socket, index: int) -> Callable[[], None]:
        target = (self.args.target_host, self.args.target_base + index)

        def read() -> None:
            while True:
                try:
                    data, client = front.recvfrom(65536)
                except BlockingIOError:
                    return
                upstream = self.upstreams.get((index, client))
                if upstream is None:
                    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    upstream.bind((self.args.listen_host, 0))
                    upstream.connect(target)
                    upstream.setblocking(False)
                    self.upstreams[(index, client)] = upstream
                    self.selector.register(
                        upstream, selectors.EVENT_READ, self.back_reader(upstream, front, client)
                    )
                self.counts["to_bmc"] += 1
                self.schedule(upstream, data, None)

        return read

    def back_reader(
        self, upstream: socket.socket, front: socket.socket, client: tuple[str, int]
    ) -> Callable[[], None]:
        def read() -> None:
            while True:
                try:
                    data = upstream.recv(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    return
                self.counts["from_bmc"] += 1
                self.schedule(front, data, client)

        return read

    def schedule(self, sock: socket.socket, data: bytes, to: tuple[str, int] | None) -> None:
        if self.rng.random() < self.args.loss:
            self.counts["lost"] += 1
            return
        jitter = self.rng.uniform(-self.args.jitter_ms, self.args.jitter_ms)
        delay = max(0.0, self.args.delay_ms + jitter) / 1000
        if delay == 0:
            self.send(sock, data, to)
            return
        self.order += 1
        heapq.heappush(self.queue, (time.monotonic() + delay, self.order, sock, data, to))

    @staticmethod
    def send(sock: socket.socket, data: bytes, to: tuple[str, int] | None) -> None:
        try:
            if to is None:
                sock.send(data)
            else:
                sock.sendto(data, to)
        except OSError:
            pass  # a full buffer or a refused port is loss too

    def run(self) -> None:
        while self.running:
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, sock, data, to = heapq.heappop(self.queue)
                self.send(sock, data, to)
            timeout = max(0.0, self.queue[0][0] - now) if self.queue else 0.5
            for key, _ in self.selector.select(timeout):
                key.data()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-base", type=int, required=True)
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--target-base", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="per datagram, each direction")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    for host in (args.listen_host, args.target_host):
        if not host.startswith("127."):
            parser.error(f"loopback addresses only, not {host}")
    proxy = Proxy(args)

    def stop(*_: object) -> None:
        proxy.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    proxy.run()
    print(json.dumps(proxy.counts), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
