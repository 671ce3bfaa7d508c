"""Block outbound network access of this Python process while a conversion step runs.

Third-party converters can fetch data on their own (onnx2tf 1.29.24 downloads sample images with
`requests` and runs `curl` for a flatbuffer schema), so the conversion steps run inside `no_network()`.
The guard is an audit hook (PEP 578) on the socket, DNS and process-launch events of CPython. An
audit hook cannot be removed once installed, so one hook is installed on first use and stays for the
life of the process. It blocks only while at least one `no_network()` block is active.

The guard is process-wide: while it is active it applies to every thread, not only to the caller's.
Sockets connected before the guard started keep working, because only new connections, name
lookups and process launches raise audit events. The guard observes only Python-level calls. Native
code that opens sockets without the `socket` module (a C++ library's own HTTP client, say) is not
seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import sys
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# Audit events that send data to, or look up, a remote address. CPython raises "socket.connect"
# for both connect() and connect_ex().
_ADDRESS_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_NAME_LOOKUP_EVENTS = frozenset(
    {
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyname_ex",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
    }
)
# A child process runs outside this interpreter's audit hook, so it could reach the network
# unseen (onnx2tf runs `curl` this way). fork() is not listed: the child keeps the hook.
_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"})

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class NetworkBlockedError(RuntimeError):
    """Raised inside `no_network()` when code tries to reach the network or start a process."""

    def __init__(self, event: str, target: str):
        self.event = event
        self.target = target
        super().__init__(
            f"{target} was blocked inside no_network() (audit event {event}). "
            "This step must run offline: pass the data it needs explicitly instead of letting it fetch them"
        )


@dataclasses.dataclass
class GuardRecord:
    """Attempts that one `no_network()` block rejected, in the order they happened.

    Callers read it after the block ends, because some libraries catch the raised
    `NetworkBlockedError` and carry on silently.
    """

    allow_loopback: bool
    allow_processes: bool
    blocked: list[NetworkBlockedError] = dataclasses.field(default_factory=list)


_lock = threading.Lock()
_active_records: list[GuardRecord] = []
_hook_installed = False


def _is_loopback_host(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", errors="replace")
    if not isinstance(host, str):
        return False

    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_local_address(address: object) -> bool:
    """Return True for a loopback IP address tuple or an AF_UNIX path."""
    if isinstance(address, (str, bytes)):
        # AF_UNIX socket path, or a Linux abstract socket name: local by definition.
        return True
    if isinstance(address, tuple) and address:
        return _is_loopback_host(address[0])
    return False


def _describe_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return repr(address)


def _classify(event: str, args: tuple) -> tuple[str, bool, bool] | None:
    """Return (target, is_local, is_process) for a guarded event, or None for other events."""
    if event in _ADDRESS_EVENTS:
        # The args of all three events are (socket, address).
        address = args[1] if len(args) > 1 else None
        if address is None:
            # sendmsg() without an address sends to the peer that connect() set earlier.
            return None
        return f"connection to {_describe_address(address)}", _is_local_address(address), False

    if event in _NAME_LOOKUP_EVENTS:
        host = args[0] if args else None
        if event == "socket.getnameinfo" and isinstance(host, tuple):
            host = host[0]
        if event == "socket.getaddrinfo" and len(args) > 1:
            target = f"name lookup of {host}:{args[1]}"
        else:
            target = f"name lookup of {host}"
        # getaddrinfo(None, port) only builds a local wildcard or loopback address.
        is_local = host is None or _is_loopback_host(host)
        return target, is_local, False

    if event in _PROCESS_EVENTS:
        # subprocess.Popen: (executable, args, cwd, env); os.system: (command,);
        # os.exec / os.posix_spawn / os.spawn: (path, argv, env) or (mode, path, argv, env).
        if event == "subprocess.Popen":
            command = args[1] if len(args) > 1 else args
        elif event == "os.spawn":
            command = args[2] if len(args) > 2 else args
        else:
            command = args[1] if len(args) > 1 else args[0]
        if isinstance(command, (list, tuple)):
            command = " ".join(os.fsdecode(part) if isinstance(part, bytes) else str(part) for part in command)
        elif isinstance(command, bytes):
            command = os.fsdecode(command)
        return f"launch of process `{command}`", False, True

    return None


def _audit_hook(event: str, args: tuple) -> None:
    # Fast path: the hook runs for every audit event of the process, guarded or not.
    if not _active_records:
        return
    if event not in _ADDRESS_EVENTS and event not in _NAME_LOOKUP_EVENTS and event not in _PROCESS_EVENTS:
        return

    classified = _classify(event, args)
    if classified is None:
        return
    target, is_local, is_process = classified

    with _lock:
        records = list(_active_records)
    # The strictest active block decides, so a nested block can only tighten the rules.
    if is_process:
        allowed = all(record.allow_processes for record in records)
    else:
        allowed = is_local and all(record.allow_loopback for record in records)
    if allowed:
        return

    blocked = NetworkBlockedError(event, target)
    with _lock:
        for record in records:
            record.blocked.append(blocked)
    logger.warning("Blocked %s inside no_network() (audit event %s)", target, event)
    raise blocked


def _install_hook() -> None:
    global _hook_installed
    with _lock:
        if _hook_installed:
            return
        sys.addaudithook(_audit_hook)
        _hook_installed = True


@contextlib.contextmanager
def no_network(*, allow_loopback: bool = False, allow_processes: bool = False) -> Iterator[GuardRecord]:
    """Block every outbound connection, name lookup and process launch of this process.

    allow_loopback: permit connections and lookups to 127.0.0.0/8, ::1, "localhost" and AF_UNIX
        sockets. By default these are blocked too.
    allow_processes: permit starting child processes. By default every launch is blocked, because
        a child process is not covered by the audit hook and could reach the network unseen.

    A blocked call raises `NetworkBlockedError` at the call site. The yielded `GuardRecord` also
    lists every blocked attempt, so a caller can detect attempts that a library caught and ignored.
    Blocks can be nested; the strictest active block decides.
    """
    _install_hook()
    record = GuardRecord(allow_loopback=allow_loopback, allow_processes=allow_processes)
    with _lock:
        _active_records.append(record)
    try:
        yield record
    finally:
        with _lock:
            _active_records.remove(record)

