"""Loopback forwards from the host into the node's network namespace.

    python -m payflow.devstack.portal GUARD_PID TARGETS_JSON NAME=HOST:PORT ...

Each ``NAME=HOST:PORT`` is a listener on the host's loopback. The process binds them all, then
moves itself into the node's network namespace (``setns``, while it has one thread): sockets it
opens from then on belong to the node, while the listeners stay on the host. A connection to
``NAME``'s listener is forwarded to the address TARGETS_JSON gives for ``NAME`` (``{"NAME":
["10.96.12.7", 80]}``), read again whenever the file changes, so a target can be set once it
exists (the app's Service after the chart is installed). A name without a target refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import socket
import sys
from pathlib import Path

_CLONE_NEWNET = 0x40000000


class Targets:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._targets: dict[str, tuple[str, int]] = {}

    def get(self, name: str) -> tuple[str, int] | None:
        with contextlib.suppress(OSError, ValueError):
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                data = json.loads(self.path.read_text())
                self._targets = {k: (str(v[0]), int(v[1])) for k, v in data.items()}
                self._mtime = mtime
        return self._targets.get(name)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(name: str, listener: socket.socket, targets: Targets) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        target = targets.get(name)
        try:
            if target is None:
                return
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*target), timeout=10)
            except (OSError, TimeoutError) as exc:
                print(
                    f"portal {name}: {target[0]}:{target[1]} unreachable: {exc}", file=sys.stderr, flush=True
                )
                return
            try:
                await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
            finally:
                up_w.close()
        finally:
            client_w.close()

    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    guard_pid, targets_file, specs = int(argv[0]), Path(argv[1]), argv[2:]
    listeners: dict[str, socket.socket] = {}
    for spec in specs:
        name, _, addr = spec.partition("=")
        host, _, port = addr.rpartition(":")
        if host not in ("127.0.0.1", "::1", "localhost"):
            print(f"portal: {spec}: only loopback addresses may listen on the host", file=sys.stderr)
            return 2
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(256)
        s.setblocking(False)
        listeners[name] = s
    fd = os.open(f"/proc/{guard_pid}/ns/net", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        print(f"portal: setns into {guard_pid}'s network namespace: {os.strerror(err)}", file=sys.stderr)
        return 1
    os.close(fd)
    targets = Targets(targets_file)
    names = ", ".join(f"{n}={s.getsockname()[0]}:{s.getsockname()[1]}" for n, s in listeners.items())
    print(f"portal: forwarding {names} into the node", flush=True)

    async def run() -> None:
        await asyncio.gather(*(_serve(n, s, targets) for n, s in listeners.items()))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
