"""What the plotting sidecar checks before it reads a request: who may ask, and how.

- **Host** (every request): a web page can make a browser send requests to the sidecar;
  with DNS rebinding (a name of the attacker's that resolves to 127.0.0.1) the browser even
  treats the sidecar as the attacker's own site. Names are therefore limited to those the
  sidecar is really reached by (:class:`HostPolicy`); an IP address cannot be rebound.
- **Origin** (writes): a browser names the page that sent a request. A write must come from
  a client that names none (go-metal's Go client, gometal's client, curl) or from the
  sidecar's own pages; any other page is refused.
- **Content-Type** (writes): ``application/json`` only. Browsers can send ``text/plain``,
  form and multipart bodies to any site without asking it first; they cannot send JSON.
- **Uploads at once** (:class:`UploadSlots`) and a deadline for each body
  (:func:`read_body`): a client that sends slowly or not at all holds one slot for a
  bounded time, and the memory held by bodies is bounded by slots x body limit.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterable

import anyio

__all__ = [
    "LOOPBACK_NAMES",
    "HostPolicy",
    "UploadSlots",
    "content_type_problem",
    "origin_problem",
    "read_body",
    "split_authority",
]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
JSON_MEDIA_TYPE = "application/json"
DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY_FORBIDDEN = set("/\\?#@ \t\r\n")


def _name(host: str) -> str:
    """A host name as compared: lowercase, no brackets, no trailing dot, IPs compressed."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_authority(value: str) -> tuple[str, int | None] | None:
    """Splits a ``Host`` header (``name[:port]``, ``[v6]:port``) into name and port.

    Args:
        value: the header's value.

    Returns:
        ``(name, port)`` with the name as :class:`HostPolicy` compares it and ``port``
        ``None`` when absent, or ``None`` when the value is not a host.

    Example:
        >>> split_authority("[::1]:8080")
        ('::1', 8080)
    """
    if not value or _AUTHORITY_FORBIDDEN & set(value):
        return None
    try:
        parts = urllib.parse.urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return _name(parts.hostname), port


class HostPolicy:
    """The ``Host`` names the sidecar answers to, against DNS rebinding.

    Args:
        names: host names and addresses accepted (any case; ``"*"`` accepts every host
            and turns the protection off, e.g. behind a reverse proxy that checks it).
        any_address: accept every IP address as ``Host`` (for a wildcard bind such as
            ``0.0.0.0``, reached through addresses the sidecar cannot list).

    Raises:
        ValueError: a name is empty or holds a character no host name has.

    Example:
        >>> policy = HostPolicy.for_bind("127.0.0.1")
        >>> policy.allows("localhost:8080"), policy.allows("evil.example")
        (True, False)
    """

    def __init__(self, names: Iterable[str] = LOOPBACK_NAMES, *, any_address: bool = False):
        accepted = set()
        for name in names:
            valid = isinstance(name, str) and (
                name == ANY_HOST
                or _is_ip(_name(name))
                or split_authority(name) == (_name(name), None)
            )
            if not valid:
                raise ValueError(
                    f"allowed hosts must be host names or IP addresses without a port "
                    f"(or '*'), got {name!r}"
                )
            accepted.add(name if name == ANY_HOST else _name(name))
        self.any_host = ANY_HOST in accepted
        self.names = frozenset(accepted - {ANY_HOST})
        self.any_address = any_address

    @classmethod
    def for_bind(cls, bind_host: str, extra: Iterable[str] = ()) -> HostPolicy:
        """The policy of a sidecar bound to ``bind_host``.

        Always accepted: the loopback names and addresses, the bound address itself and
        ``extra``. A wildcard bind (``0.0.0.0``, ``::``) also accepts this machine's host
        name and fully qualified name, and any IP address.

        Args:
            bind_host: the ``--host`` the server binds.
            extra: further names (``--allowed-host``), e.g. a container's service name.

        Returns:
            The policy.

        Example:
            >>> HostPolicy.for_bind("0.0.0.0").allows("192.168.1.20:8080")
            True
        """
        names = [*LOOPBACK_NAMES, *extra]
        wildcard = (
            _is_ip(_name(bind_host)) and ipaddress.ip_address(_name(bind_host)).is_unspecified
        )
        if wildcard or not bind_host:
            names += [n for n in (socket.gethostname(), socket.getfqdn()) if n]
        else:
            names.append(bind_host)
        return cls(names, any_address=wildcard or not bind_host)

    def allows(self, host_header: str | None) -> bool:
        """Tells whether a request with this ``Host`` header is answered.

        Args:
            host_header: the header's value; ``None`` when the request has none (an
                HTTP/1.0 client: browsers always send one).

        Returns:
            True when the host is accepted.
        """
        if self.any_host or host_header is None:
            return True
        split = split_authority(host_header)
        if split is None:
            return False
        name = split[0]
        return name in self.names or (self.any_address and _is_ip(name))

    def describe(self) -> str:
        """The accepted names, for messages."""
        if self.any_host:
            return "any host"
        text = ", ".join(sorted(self.names))
        return text + (" or any IP address" if self.any_address else "")


def origin_problem(origin: str | None, host_header: str | None, scheme: str) -> str | None:
    """Why a write with this ``Origin`` is refused, or ``None`` when it is not.

    A request without ``Origin`` comes from no web page; one with it must come from the
    sidecar's own pages: same scheme-less host and port as the ``Host`` it was sent to.

    Args:
        origin: the ``Origin`` header, or ``None``.
        host_header: the ``Host`` header.
        scheme: the request's scheme (``http``), for the default port.

    Returns:
        A message naming the origin, or ``None``.

    Example:
        >>> origin_problem("http://evil.example", "127.0.0.1:8080", "http") is not None
        True
    """
    if origin is None:
        return None
    refused = (
        f"Origin {origin!r} may not write here: only the sidecar's own pages "
        f"(Origin http://{host_header}) or clients that send no Origin may"
    )
    try:
        parts = urllib.parse.urlsplit(origin)
        origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return refused
    target = split_authority(host_header or "")
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or target is None:
        return refused
    target_port = target[1] or DEFAULT_PORTS.get(scheme)
    if (_name(parts.hostname), origin_port) != (target[0], target_port):
        return refused
    return None


def content_type_problem(content_type: str | None) -> str | None:
    """Why a write body of this ``Content-Type`` is refused, or ``None``.

    Args:
        content_type: the header's value (parameters such as ``charset`` are allowed).

    Returns:
        A message naming the type received, or ``None`` for ``application/json``.

    Example:
        >>> content_type_problem("application/json; charset=utf-8") is None
        True
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == JSON_MEDIA_TYPE:
        return None
    got = repr(content_type) if content_type is not None else "no Content-Type"
    return f"Content-Type must be {JSON_MEDIA_TYPE}, got {got}"


class UploadSlots:
    """A count of the request bodies being received and handled at once, with a limit.

    Used from the event loop only, so a plain counter is enough.

    Args:
        limit: the most uploads at once (>= 1).

    Raises:
        TypeError: ``limit`` is not an int.
        ValueError: ``limit`` is below 1.

    Example:
        >>> slots = UploadSlots(2)
        >>> slots.try_acquire(), slots.try_acquire(), slots.try_acquire()
        (True, True, False)
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"max_uploads must be a positive int, got {limit!r}")
        if limit < 1:
            raise ValueError(f"max_uploads must be a positive int, got {limit!r}")
        self.limit = limit
        self.in_use = 0

    def try_acquire(self) -> bool:
        """Takes a slot if one is free; returns whether it did."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        """Gives back a slot taken by :meth:`try_acquire`."""
        self.in_use -= 1


class BodyTooLarge(Exception):
    """The body passed the size limit while it was read (``args[0]``: the limit)."""


async def read_body(chunks: AsyncIterator[bytes], limit: int, timeout_s: float) -> bytearray:
    """Reads a whole request body, at most ``limit`` bytes within ``timeout_s`` seconds.

    Args:
        chunks: the body's chunks (Starlette's ``request.stream()``).
        limit: the most bytes accepted.
        timeout_s: the time allowed for the whole body.

    Returns:
        The body.

    Raises:
        BodyTooLarge: more than ``limit`` bytes arrived.
        TimeoutError: the body was not complete in time.

    Example:
        >>> body = await read_body(request.stream(), 10_000_000, 30.0)  # doctest: +SKIP
    """
    # One growing buffer rather than a list of chunks: a large block goes back to the
    # system when freed, while thousands of 64 KB chunks leave the heap fragmented (the
    # process would keep the memory of every body it ever buffered).
    body = bytearray()
    with anyio.fail_after(timeout_s):
        async for chunk in chunks:
            if len(body) + len(chunk) > limit:
                raise BodyTooLarge(limit)
            body += chunk
    return body
