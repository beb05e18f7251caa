"""The embedded broker inside its own network namespace, reachable only through a Unix socket: for the TLS
test (tests/test_tls.py), where stunnel in the default namespace terminates TLS on the very host:port the
broker advertises and forwards to that socket.

Run as `unshare -n python tests/netns_broker.py --port P --sock PATH --addr-file F`: brings the namespace's
loopback up, starts `reelstream broker --port P` (it listens on, and advertises, 127.0.0.1:P here), and
forwards every connection to PATH (a file, so visible from the other namespace) to 127.0.0.1:P. SIGTERM
stops the broker too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _loopback_up() -> None:
    """`ip link set lo up` without iproute2: a new network namespace starts with its loopback down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(262144):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(sock: str, port: int, broker: subprocess.Popen) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tmp = f"{sock}.tmp"
    server = await asyncio.start_unix_server(handle, path=tmp)
    os.replace(tmp, sock)  # appears only once it accepts
    async with server:
        while not stop.is_set() and broker.poll() is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sock", required=True)
    parser.add_argument("--addr-file", required=True)
    args = parser.parse_args()
    _loopback_up()
    broker = subprocess.Popen(
        [sys.executable, "-m", "reelstream.cli", "broker", "--port", str(args.port), "--addr-file", args.addr_file]
    )
    try:
        asyncio.run(_serve(args.sock, args.port, broker))
    finally:
        if broker.poll() is None:
            broker.terminate()
            broker.wait(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.sock)
    return broker.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
