"""Fetching one file over HTTP from the first of several addresses that gives it whole and true.

Bytes arrive in ``NAME.part`` beside the destination, and a later request
asks only for what is missing (``Range: bytes=N-``): a dropped connection is
resumed at once from the same address, and a download killed with the
process resumes on the next run. A server that answers such a request with
the whole file (status 200 rather than 206) is read from the start again.

An address that fails (an HTTP error such as 404, no answer within the
timeout, the connection closed early again and again, a copy whose SHA-256 is
not the pinned one) costs one line, handed to ``notice``, and the next
address is tried. Only a copy that verifies takes the destination's name.

No address can fill the disk or hold the download for ever:

* **size**: no more is taken from an address than the file's pinned size,
  else the length the server states, else :data:`UNSIZED_LIMIT`. An address
  offering more is passed over before its bytes are read; one sending more
  is passed over as soon as it does, and the bytes it sent are deleted.
* **time**: the connection, and then the answer's first byte, are each
  waited for ``timeout`` seconds at most; from the first byte on, every
  span of ``timeout`` seconds must bring :data:`STALL_BYTES` or more (the
  headers count), or the address is given up as stalled. A server that
  trickles a byte a second thus costs about twice ``timeout``.
* **redirects** are followed to http and https addresses only, never back
  to one already visited, and at most ten in a row.

The answer must be the file's own bytes: one sent compressed
(``Content-Encoding``), which is never asked for, is passed over.

The standard library's :mod:`urllib.request` does the HTTP, so the usual
``https_proxy`` / ``no_proxy`` settings apply and nothing is added to the
dependencies.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from facegrid.core.errors import FetchError, PathError
from facegrid.core.files import sha256_file

log = logging.getLogger(__name__)

#: Bytes read from the connection, and from disk when hashing, at a time (at most).
CHUNK = 1 << 20

#: Times one address is asked for the rest after it closed the connection early, before the next is tried.
RESUMES = 3

#: Bytes an address must send in every span of ``timeout`` seconds after its first byte, not to be given up as stalled.
STALL_BYTES = 32 * 1024

#: Bytes taken at most from an address for a file of no pinned size whose server states no length either.
UNSIZED_LIMIT = 8 << 30

USER_AGENT = "facegrid-download"


class _AddressFailed(Exception):
    """One address did not give the file; the message says why, in a few words."""


class _Stalled(OSError):
    """An address sent too few bytes for too long; the message says how few in how long."""


def address_problem(url: str) -> str | None:
    """Why ``url`` cannot be asked for a file, in a few words, or None if it can.

    Accepted: an http:// or https:// address with a host name (international
    names included), a port from 1 to 65535 if any, and no user name or password; space
    and control characters must be percent-encoded, as must anything outside
    ASCII after the host name.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        return "spaces or control characters in the address (write them %-encoded)"
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.port == 0:  # reading the port also checks that it is a number in range
            return "port 0 in the address"
    except ValueError as error:
        return f"not a usable address ({error})"
    if parts.scheme not in ("http", "https"):
        return "not an http:// or https:// address"
    if not parts.hostname:
        return "no host name in the address"
    if parts.username is not None or parts.password is not None:
        return "a user name or password in the address, which facegrid does not send"
    if not (parts.path + parts.query + parts.fragment).isascii():
        return "characters outside ASCII after the host name (write them %-encoded)"
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return f"{parts.hostname!r} is not a valid host name"
    return None


def fetch_file(
    urls: Iterable[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 30.0,
    progress: bool = False,
    notice: Callable[[str], None] = log.warning,
) -> tuple[str, str]:
    """Download ``dest`` from the first of ``urls`` that gives a good copy.

    Args:
        urls: addresses of the same file, tried in order.
        dest: where the verified copy goes; its bytes wait in ``dest.part``
            (kept on failure, for the next address or run to resume).
        sha256: the pinned digest (hex): a copy with another is deleted and
            the next address tried. None takes any complete copy.
        size: the file's size in bytes, if known: an address offering
            another size is passed over before its bytes are read, and no
            address is read past it.
        timeout: seconds to wait for a connection or an answer, and the span
            in which an answer must bring :data:`STALL_BYTES`, before giving
            up on an address.
        progress: show a progress bar on stderr.
        notice: called with one line for each address that fails.

    Returns:
        The address that gave the copy, and the copy's SHA-256.

    Raises:
        FetchError: no address gave a good copy.
        facegrid.core.errors.PathError: ``dest`` or its ``.part`` is a folder, or
            cannot be written (a full disk): no other address would do better.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    for path in (dest, part):
        if path.is_dir():
            raise PathError(path, "is a folder, where the download's copy goes; move it away")
    for url in urls:
        label = f"{dest.name}: {url}"
        try:
            _download(url, part, label, size, timeout, progress, notice)
            digest = _settle(part, dest, sha256)
        except _AddressFailed as failure:
            notice(f"{label}: {failure}")
            continue
        log.info("%s: %d bytes from %s, sha256 %s", dest, dest.stat().st_size, url, digest)
        return url, digest
    raise FetchError(f"{dest.name}: no address gave a good copy")


def _settle(part: Path, dest: Path, sha256: str | None) -> str:
    """Give the complete ``part`` the name ``dest`` if its digest is ``sha256`` (or none is pinned), else delete it."""
    digest = sha256_file(part)
    try:
        if sha256 is not None and digest != sha256.lower():
            part.unlink()
            raise _AddressFailed(f"sha256 {digest} is not the pinned {sha256.lower()}; copy deleted")
        os.replace(part, dest)
    except OSError as error:
        raise PathError(error.filename or part, f"cannot write: {error.strerror or error}") from None
    return digest


def _download(url, part: Path, label: str, size, timeout, progress, notice) -> None:
    """Bring ``part`` to the whole file from ``url``, asking again for the rest while the connection closes early."""
    problem = address_problem(url)
    if problem is not None:
        raise _AddressFailed(problem)
    for attempt in range(RESUMES + 1):
        received, total = _request_rest(url, part, label, size, timeout, progress, notice)
        if total is None or received >= total:
            return
        if attempt == RESUMES:
            raise _AddressFailed(
                f"connection closed early {RESUMES + 1} times, last at {received:,} of {total:,} bytes"
            )
        notice(f"{label}: connection closed at {received:,} of {total:,} bytes; asking for the rest")


def _request_rest(url, part: Path, label: str, size, timeout, progress, notice) -> tuple[int, int | None]:
    """One request for what ``part`` lacks, appended to it.

    Returns:
        The bytes ``part`` then holds, and the whole file's size where the
        server gave it (None where it did not: the digest alone decides).
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if (
            error.code == 416 and offset
        ):  # nothing lies past `offset`: the part is whole, or too long (the digest tells)
            return offset, offset
        raise _AddressFailed(f"HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:
        raise _AddressFailed(_why(error, timeout)) from None
    with response:
        offset, total = _announced(response, offset, label, notice)
        if size is not None and total is not None and total != size:
            raise _AddressFailed(f"offers {total:,} bytes where the manifest says {size:,}")
        limit, excess = _limit(size, total)
        with tqdm(
            total=total or size,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar:
            if not _receive(response, part, offset, limit - offset, timeout, bar):
                part.unlink()
                raise _AddressFailed(f"sent more than {excess}; copy deleted")
    return part.stat().st_size, total


def _limit(size: int | None, total: int | None) -> tuple[int, str]:
    """The most bytes to take from an address (pinned size, else stated, else :data:`UNSIZED_LIMIT`), and its words."""
    if size is not None:
        return size, f"the manifest's {size:,} bytes"
    if total is not None:
        return total, f"the {total:,} bytes it announced"
    return UNSIZED_LIMIT, f"{UNSIZED_LIMIT:,} bytes without stating a length (the most facegrid takes so)"


def _announced(response, offset: int, label: str, notice) -> tuple[int, int | None]:
    """Where the answer's body starts in the file, and the file's whole size where the answer states it."""
    if response.status not in (200, 206):
        raise _AddressFailed(f"answered HTTP {response.status} {response.reason}, not the file")
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise _AddressFailed(f"sent the file with Content-Encoding {encoding!r}, not as it is")
    length = re.fullmatch(r"[0-9]+", response.headers.get("Content-Length", "").strip())
    length = int(length[0]) if length else None
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        match = re.fullmatch(r"bytes ([0-9]+)-[0-9]+/([0-9]+|\*)", content_range.strip())
        if match is None or int(match[1]) != offset:
            raise _AddressFailed(f"answered a request from byte {offset:,} with Content-Range {content_range!r}")
        return offset, int(match[2]) if match[2] != "*" else None if length is None else offset + length
    if offset:
        notice(f"{label}: ignored the request to resume at byte {offset:,}; starting over")
    return 0, length


def _receive(response, part: Path, offset: int, room: int, timeout: float, bar) -> bool:
    """Write the answer's body to ``part`` from byte ``offset``: True once it ended, False once it outgrew ``room``.

    Nothing past ``room`` is written. Reads return what has arrived rather
    than wait for a whole :data:`CHUNK`, so that a slow answer is measured
    against the stall rule as it comes.

    Raises:
        facegrid.core.errors.PathError: ``part`` cannot be written.
    """
    try:
        with open(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = response.read1(CHUNK)
                except (OSError, http.client.HTTPException) as error:
                    raise _AddressFailed(_why(error, timeout)) from None
                if not chunk:
                    return True
                if len(chunk) > room:
                    return False
                out.write(chunk)
                room -= len(chunk)
                bar.update(len(chunk))
    except OSError as error:
        raise PathError(part, f"cannot write: {error.strerror or error}") from None


def _why(error: Exception, timeout: float) -> str:
    """A few words for a connection failure, "no answer within N s" for a timeout."""
    reason = getattr(error, "reason", error)  # URLError wraps the socket's error
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(reason) or type(reason).__name__


def _opener() -> urllib.request.OpenerDirector:
    """urllib's usual opener (proxies from the environment), speaking HTTP at a pace and redirecting safely."""
    return urllib.request.build_opener(_PacedHTTPHandler, _PacedHTTPSHandler, _Redirects)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a usable http(s) address not visited before, at most ``max_redirections`` in a row."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        visited = getattr(req, "redirect_dict", {})
        problem = address_problem(newurl)
        if problem is None and newurl in visited:
            problem = "a redirect loop"
        elif problem is None and len(visited) >= self.max_redirections:
            problem = f"more than {self.max_redirections} redirects in a row"
        if problem is not None:
            fp.close()
            raise _AddressFailed(f"redirected to {newurl}: {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)

    def http_error_302(self, req, fp, code, msg, headers):
        try:
            return super().http_error_302(req, fp, code, msg, headers)
        except ValueError as error:  # a Location urllib cannot parse
            fp.close()
            raise _AddressFailed(f"redirected to {headers.get('Location')!r}: not a usable address ({error})") from None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _Paced(io.RawIOBase):
    """A connection's incoming bytes, failing a read once ``window`` seconds bring fewer than :data:`STALL_BYTES`.

    The spans are counted from the first byte on.
    """

    def __init__(self, raw: io.RawIOBase, window: float):
        super().__init__()
        self._raw, self._window = raw, window
        self._since, self._count = None, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._raw.readinto(buffer)
        now = time.monotonic()
        if self._since is None:
            self._since = now
        self._count += count
        if now - self._since >= self._window:
            if self._count < STALL_BYTES:
                raise _Stalled(
                    f"stalled: {self._count:,} bytes in {now - self._since:.2g} s, where "
                    f"{STALL_BYTES:,} are wanted every {self._window:g} s"
                )
            self._since, self._count = now, 0
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


class _PacedResponse(http.client.HTTPResponse):
    """An HTTP answer read through :class:`_Paced`, its window the connection's timeout."""

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        raw = sock.makefile("rb", buffering=0)  # taken before the plain reader lets go of the socket
        self.fp.close()
        self.fp = io.BufferedReader(_Paced(raw, sock.gettimeout()))


class _PacedHTTPConnection(http.client.HTTPConnection):
    response_class = _PacedResponse


class _PacedHTTPSConnection(http.client.HTTPSConnection):
    response_class = _PacedResponse


class _PacedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_PacedHTTPConnection, req)


class _PacedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_PacedHTTPSConnection, req, context=self._context)
