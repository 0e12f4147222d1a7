"""Record, and refuse, every network connection to a host that is not loopback (tests only).

Put this folder first on ``PYTHONPATH`` and set ``MIXFT_NETGUARD_LOG=FILE``: in every Python process
that starts with that environment (mixft, and the Axolotl processes it launches) a name lookup or a
connect to a non-loopback address appends one JSON line (``pid``, ``call``, ``host``, the process's
``argv`` and the calling frames) to ``FILE``
and fails with ``OSError(ENETUNREACH)``, so nothing leaves the machine. Loopback and Unix sockets
pass. At exit each process also writes what Axolotl's telemetry decided (``TelemetryManager``'s
``enabled``) and whether PostHog created its client, when those modules were imported.
"""

from __future__ import annotations

import atexit
import errno
import ipaddress
import json
import os
import socket
import sys

_LOG = os.environ.get("MIXFT_NETGUARD_LOG")


def _record(**entry) -> None:
    with open(_LOG, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
        fh.write(json.dumps({"pid": os.getpid(), **entry}) + "\n")


def _loopback(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local host
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "localhost.localdomain", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: resolving it would ask DNS


def _refuse(call: str, host) -> None:
    import traceback

    frames = traceback.extract_stack()[:-2]
    where = [f"{f.filename}:{f.lineno}" for f in frames if not f.filename.startswith("<frozen")]
    _record(call=call, host=str(host), argv=sys.argv[:3], where=where)
    raise OSError(errno.ENETUNREACH, f"network access refused by tests/netguard: {call} {host}")


if _LOG:
    _getaddrinfo = socket.getaddrinfo
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            _refuse("getaddrinfo", host)
        return _getaddrinfo(host, *args, **kwargs)

    def _address_host(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            return address[0]
        return None  # AF_UNIX and the like

    def connect(self, address):
        host = _address_host(self, address)
        if not _loopback(host):
            _refuse("connect", host)
        return _connect(self, address)

    def connect_ex(self, address):
        host = _address_host(self, address)
        if not _loopback(host):
            _refuse("connect_ex", host)
        return _connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]

    @atexit.register
    def _telemetry_state() -> None:
        manager = sys.modules.get("axolotl.telemetry.manager")
        if manager is not None:
            instance = manager.TelemetryManager._instance
            posthog = sys.modules.get("posthog")
            _record(
                call="exit",
                argv=sys.argv[:3],
                telemetry_enabled=None if instance is None else bool(instance.enabled),
                posthog_client=None if posthog is None else posthog.default_client is not None,
            )
