"""Fuzzing ``facegrid download``: generated mirrors, archives, dataset folders and arguments.

One loopback server, started here, serves mirror ``/N/`` as the N-th
generated behaviour says: a status (200, 206, a redirect, an error), a
length stated right, wrong, absent or garbled, a body whole, cut short,
corrupted, longer, endless, trickled or never sent, Range requests honoured,
ignored or answered wrongly, sometimes compressed. What it serves is a
generated archive (a good zip, garbage, a zip cut short, one with a member
that climbs out, one claiming a pebibyte), pinned by its digest, by another,
or not at all. Whatever happens, the command ends soon with a documented
exit status and no traceback (:func:`test_cli_fuzz.assert_behaves`), writes
nothing outside the dataset folder, never holds more of an archive than its
pinned size, and replaces a file of the user's only when asked.

Every host name resolves to 127.0.0.1 here and no connection may leave it
(:func:`test_download.loopback_only`), so that generated international host
names reach the test's server and nothing else.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import socket
import threading
import time
import zipfile

import pytest
from fuzzing import assert_behaves
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_download import loopback_only  # noqa: F401 (an autouse fixture)

from facegrid.wider import download, fetch
from facegrid.wider.download import Archive, Release

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: The archives of the generated release, each with a member that unpacking provides.
PROVIDES = {"wider_face_split.zip": "wider_face_split/readme.txt", "WIDER_val.zip": "WIDER_val/images/a.jpg"}

#: Where the user keeps a file of their own in some examples: a member's place.
USERS_FILE = "wider_face_split/readme.txt"

#: Bytes a mirror stating no length may send for an unpinned archive, here (the real limit is gigabytes).
UNSIZED_LIMIT = 1 << 16


def _zip(members: dict[str, bytes], claimed: int | None = None) -> bytes:
    """A zip of ``members``; with ``claimed``, its directory says the first member unpacks to that many bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
        if claimed is not None:
            zipped.filelist[0].file_size = claimed
    return buffer.getvalue()


def _released(name: str) -> bytes:
    """What the member of archive ``name`` holds in the release."""
    return f"{name} as released\n".encode()


def _good(name: str) -> bytes:
    return _zip({PROVIDES[name]: _released(name)})


#: Contents a mirror serves for an archive, before its behaviour alters them.
CONTENTS = st.sampled_from(["good", "good", "good", "garbage", "cut", "escaping", "bomb"])

#: What a mirror that works does with a request.
PLAIN = {"status": 200, "length": "right", "body": "whole", "range": "honoured", "location": "next", "gzip": False}

#: A generated behaviour: what one mirror does with a request (often it works).
BEHAVIOURS = st.sampled_from([True, False, False]).flatmap(
    lambda plain: (
        st.just(PLAIN)
        if plain
        else st.fixed_dictionaries(
            {
                "status": st.sampled_from([200, 200, 200, 200, 206, 302, 404, 500, 416, 204]),
                "length": st.sampled_from(
                    ["right", "right", "right", "absent", "one less", "one more", "x", "-1", "\u00b2"]
                ),
                "body": st.sampled_from(
                    ["whole"] * 6 + ["cut", "corrupted", "longer", "empty", "endless", "trickled", "silent"]
                ),
                "range": st.sampled_from(["honoured", "honoured", "ignored", "wrong"]),
                "location": st.sampled_from(
                    [
                        "next",
                        "itself",
                        "ftp://127.0.0.1:1/x",
                        "file:///etc/passwd",
                        "http://[::1/x",
                        "data:,x",
                        "//127.0.0.1:1/x",
                    ]
                ),
                "gzip": st.sampled_from([False] * 5 + [True]),
            }
        )
    )
)


@st.composite
def archives(draw, name: str) -> tuple[bytes, str]:
    """What the mirrors serve for ``name``, and how it is pinned: ``served``, ``other`` (a wrong digest) or ``none``."""
    kind = draw(CONTENTS)
    good = _good(name)
    content = {
        "good": good,
        "garbage": draw(st.binary(max_size=64)),
        "cut": good[: draw(st.integers(0, len(good) - 1))],
        "escaping": _zip(
            {
                PROVIDES[name]: b"x",
                draw(st.sampled_from(["../out.txt", "/tmp/out.txt", "a/../../out.txt", "C:\\out.txt"])): b"x",
            }
        ),
        "bomb": _zip({PROVIDES[name]: b"x"}, claimed=1 << 50),
    }[kind]
    return content, draw(st.sampled_from(["served", "served", "served", "other", "none"]))


class _Mirrors(http.server.BaseHTTPRequestHandler):
    """GET /N/NAME: the archive NAME as behaviour N says."""

    def do_GET(self):
        self.server.asked.append(self.path)
        index, _, name = self.path.strip("/").partition("/")
        behaviours, data = self.server.behaviours, self.server.served.get(name)
        if not index.isdigit() or int(index) >= len(behaviours) or data is None:
            self.send_error(404)
            return
        behaviour = behaviours[int(index)]
        with contextlib.suppress(OSError):  # the client hung up
            self._answer(behaviour, data, int(index), name)

    def _answer(self, behaviour: dict, data: bytes, index: int, name: str) -> None:
        status, body = behaviour["status"], behaviour["body"]
        if body == "silent":
            self.server.stop.wait(2)
            return
        if status in (404, 500, 416, 204):
            self.send_error(status)
            return
        if status == 302:
            location = {"next": f"/{index + 1}/{name}", "itself": self.path}.get(
                behaviour["location"], behaviour["location"]
            )
            self.send_response(302)
            self.send_header("Location", location)
            self.end_headers()
            return
        data = {
            "corrupted": data[:-1] + bytes([data[-1] ^ 1]) if data else b"\0",
            "longer": data + b"\0",
            "empty": b"",
        }.get(body, data)
        asked = self.headers.get("Range", "bytes=0-").removeprefix("bytes=").removesuffix("-")
        start = int(asked) if behaviour["range"] != "ignored" else 0
        status = 206 if start or status == 206 else 200
        self.send_response(status)
        if status == 206:
            claimed = start if behaviour["range"] == "honoured" else start + 1
            self.send_header("Content-Range", f"bytes {claimed}-{max(len(data) - 1, claimed)}/{len(data)}")
        payload = data[start:]
        if behaviour["gzip"]:
            payload = gzip.compress(payload)
            self.send_header("Content-Encoding", "gzip")
        length = {"right": str(len(payload)), "one less": str(len(payload) - 1), "one more": str(len(payload) + 1)}
        if body != "endless" and behaviour["length"] != "absent":
            self.send_header("Content-Length", length.get(behaviour["length"], behaviour["length"]))
        self.end_headers()
        self._send(body, payload)

    def _send(self, body: str, payload: bytes) -> None:
        if body == "cut":
            self.wfile.write(payload[: len(payload) // 2])
        elif body == "endless":  # the payload, then zeros until the client hangs up (or 4 MiB)
            self.wfile.write(payload)
            for _ in range(1024):
                self.wfile.write(bytes(4096))
        elif body == "trickled":
            for byte in payload:
                self.wfile.write(bytes([byte]))
                if self.server.stop.wait(0.02):
                    return
        else:
            self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """The loopback server; every host name resolves to it, and unpinned archives are capped low."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirrors)
    httpd.behaviours, httpd.served, httpd.asked, httpd.stop = [], {}, [], threading.Event()
    httpd.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    resolve = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, port, *args, **kwargs: resolve("127.0.0.1", port, *args, **kwargs)
    )
    monkeypatch.setattr(fetch, "UNSIZED_LIMIT", UNSIZED_LIMIT)
    yield httpd
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def mirror_urls(port: int, count: int):
    """Strategy: a --mirror value: one of the server's mirrors (mostly), by an international name, or an odd address."""
    kind = st.sampled_from(["ours"] * 10 + ["international"] * 2 + ["odd"])
    ours = st.integers(0, count).map(lambda n: f"http://127.0.0.1:{port}/{n}/")
    international = st.integers(0, count).map(lambda n: f"http://b\u00fccher.test:{port}/{n}")
    odd = st.sampled_from(
        [
            f"http://127.0.0.1:{port}/a b/",
            "http://127.0.0.1:99999/",
            "http://u:p@127.0.0.1/",
            "http://a..b/",
            "ftp://127.0.0.1/",
            "http://[::1/",
            "http://127.0.0.1:1/",
            "http:///x",
            f"http://127.0.0.1:{port}/\u00fc/",
            "http://" + "a" * 64 + ".test/",
            "",
        ]
    )
    return kind.flatmap({"ours": ours, "international": international, "odd": odd}.get)


#: What the dataset folder holds before the run.
FOLDERS = st.sampled_from(
    ["fresh"] * 16
    + [
        "under a file",
        "a file",
        "stale part",
        "part folder",
        "stamp garbage",
        "stamp folder",
        "users file",
        "identical file",
    ]
)


def _prepare(root, folder: str, served: dict[str, bytes]):
    """Make the dataset folder as ``folder`` says; its path."""
    to = root / "ds"
    archives = to / "archives"
    if folder in ("under a file", "a file"):
        (root / "file").write_bytes(b"a file")
        return root / "file" / "ds" if folder == "under a file" else root / "file"
    if folder in ("stale part", "part folder", "stamp garbage", "stamp folder"):
        archives.mkdir(parents=True)
    name = "wider_face_split.zip"
    if folder == "stale part":
        (archives / f"{name}.part").write_bytes(served[name][: len(served[name]) // 2])
    elif folder == "part folder":
        (archives / f"{name}.part").mkdir()
    elif folder == "stamp garbage":
        (archives / f"{name}.sha256").write_bytes(b"\xff\0 nonsense " * 50)
    elif folder == "stamp folder":
        (archives / f"{name}.sha256").mkdir()
    elif folder in ("users file", "identical file"):
        (to / USERS_FILE).parent.mkdir(parents=True)
        (to / USERS_FILE).write_bytes(b"my own notes\n" if folder == "users file" else _released(name))
    return to


def _files(root) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@FUZZ
@given(
    data=st.data(),
    behaviours=st.lists(BEHAVIOURS, min_size=1, max_size=3),
    split=archives("wider_face_split.zip"),
    val=archives("WIDER_val.zip"),
    folder=FOLDERS,
    only=st.lists(st.sampled_from([*PROVIDES] * 10 + ["WIDER_nope.zip"]), max_size=2),
    timeout=st.sampled_from(["0.1", "0.2"] * 20 + ["0", "-1", "nan", "x", "1e400", "4000"]),
    flags=st.lists(st.sampled_from(["--overwrite", "--trust-unpinned"]), max_size=2, unique=True),
)
def test_download_behaves(server, workdir, monkeypatch, data, behaviours, split, val, folder, only, timeout, flags):
    root = workdir()
    served = {"wider_face_split.zip": split[0], "WIDER_val.zip": val[0]}
    pins = {
        name: {"served": content, "other": _good(name) + b"!", "none": None}[pin]
        for name, (content, pin) in (("wider_face_split.zip", split), ("WIDER_val.zip", val))
    }
    server.behaviours, server.served, server.asked = behaviours, served, []
    monkeypatch.setitem(
        download.RELEASES,
        "widerface",
        Release(
            tuple(
                Archive(
                    name,
                    PROVIDES[name],
                    sha256=None if pin is None else hashlib.sha256(pin).hexdigest(),
                    size=None if pin is None else len(pin),
                )
                for name, pin in pins.items()
            ),
            (f"http://127.0.0.1:{server.port}/0/",),
        ),
    )
    mirrors = data.draw(st.lists(mirror_urls(server.port, len(behaviours)), max_size=2))
    to = _prepare(root, folder, served)
    before = _files(root)
    args = ["download", "widerface", "--to", to, "--timeout", timeout, *flags]
    args += [item for name in only for item in ("--only", name)] + [
        item for url in mirrors for item in ("--mirror", url)
    ]

    started = time.monotonic()
    result = assert_behaves(args)
    assert time.monotonic() - started < 10, args
    event(f"exit {result.exit_code}, {len(server.asked)} requests")

    after = _files(root)
    outside = {path for path in after if not (root / path).is_relative_to(to)}
    assert {path: after[path] for path in outside} == {path: before[path] for path in outside}, args
    for name, pin in pins.items():
        for kept in (to / "archives" / name, to / "archives" / f"{name}.part"):
            if kept.is_file():
                assert kept.stat().st_size <= (len(pin) if pin is not None else UNSIZED_LIMIT), (args, kept)
    if folder == "users file" and "--overwrite" not in flags:
        assert (to / USERS_FILE).read_bytes() == b"my own notes\n"
    if result.exit_code == 0:
        asked = [name for name in served if not only or name in only]
        assert all((to / PROVIDES[name]).is_file() for name in asked), (args, result.output)
