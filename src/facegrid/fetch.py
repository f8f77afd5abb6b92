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

The standard library's :mod:`urllib.request` does the HTTP, so the usual
``https_proxy`` / ``no_proxy`` settings apply and nothing is added to the
dependencies.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from facegrid.errors import FacegridError

log = logging.getLogger(__name__)

#: Bytes read from the connection, and from disk when hashing, at a time.
CHUNK = 1 << 20

#: Times one address is asked for the rest after it closed the connection early, before the next is tried.
RESUMES = 3

USER_AGENT = "facegrid-download"


class FetchError(FacegridError):
    """No address gave a good copy (each address's failure was reported as it happened)."""


class _AddressFailed(Exception):
    """One address did not give the file; the message says why, in a few words."""


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, as 64 lowercase hex digits."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


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
            another size is passed over before its bytes are read.
        timeout: seconds to wait for a connection or for more bytes before
            giving up on an address.
        progress: show a progress bar on stderr.
        notice: called with one line for each address that fails.

    Returns:
        The address that gave the copy, and the copy's SHA-256.

    Raises:
        FetchError: no address gave a good copy.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    for url in urls:
        label = f"{dest.name}: {url}"
        try:
            _download(url, part, label, size, timeout, progress, notice)
        except _AddressFailed as failure:
            notice(f"{label}: {failure}")
            continue
        digest = sha256_file(part)
        if sha256 is not None and digest != sha256.lower():
            part.unlink()
            notice(f"{label}: sha256 {digest} is not the pinned {sha256.lower()}; copy deleted")
            continue
        os.replace(part, dest)
        log.info("%s: %d bytes from %s, sha256 %s", dest, dest.stat().st_size, url, digest)
        return url, digest
    raise FetchError(f"{dest.name}: no address gave a good copy")


def _download(url, part: Path, label: str, size, timeout, progress, notice) -> None:
    """Bring ``part`` to the whole file from ``url``, asking again for the rest while the connection closes early."""
    for attempt in range(RESUMES + 1):
        received, total = _request_rest(url, part, label, size, timeout, progress, notice)
        if total is None or received >= total:
            return
        if attempt == RESUMES:
            raise _AddressFailed(f"connection closed early {RESUMES + 1} times, last at {received:,} of {total:,} bytes")
        notice(f"{label}: connection closed at {received:,} of {total:,} bytes; asking for the rest")


def _request_rest(url, part: Path, label: str, size, timeout, progress, notice) -> tuple[int, int | None]:
    """One request for what ``part`` lacks, appended to it.

    Returns:
        The bytes ``part`` then holds, and the whole file's size where the
        server gave it (None where it did not: the digest alone decides).
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:  # nothing lies past `offset`: the part is whole, or too long (the digest tells)
            return offset, offset
        raise _AddressFailed(f"HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
        raise _AddressFailed(_why(error, timeout)) from None
    with response:
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
            if match is None or int(match[1]) != offset:
                raise _AddressFailed(f"answered a request from byte {offset:,} with Content-Range {content_range!r}")
        elif offset:
            notice(f"{label}: ignored the request to resume at byte {offset:,}; starting over")
            offset = 0
        length = response.headers.get("Content-Length", "")
        total = offset + int(length) if length.isdigit() else None
        if size is not None and total is not None and total != size:
            raise _AddressFailed(f"offers {total:,} bytes where the manifest says {size:,}")
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total or size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress,
        ) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:
                raise _AddressFailed(_why(error, timeout)) from None
    return part.stat().st_size, total


def _why(error: Exception, timeout: float) -> str:
    """A few words for a connection failure, "no answer within N s" for a timeout."""
    reason = getattr(error, "reason", error)  # URLError wraps the socket's error
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(reason) or type(reason).__name__
