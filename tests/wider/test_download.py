"""facegrid download against a loopback HTTP server started here: mirrors, digests, resuming, timeouts, unpacking.

The server serves small zip archives in the WIDER FACE layout, made here,
under one path prefix per mirror (``/m1/``, ``/m2/``), each prefix behaving
as the test sets it: a good copy, a corrupt one, one of another size, a
404, a response cut off once, a server that ignores ``Range``, one that
never answers, one that streams without end, one that trickles, one that
redirects badly, one that compresses. The release downloaded is this file's
own small manifest, put in place of the real one; the real one is only
read, to check that each of its archives is pinned and where it is fetched
from. Nothing may connect beyond 127.0.0.1 (:func:`loopback_only`).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import re
import socket
import threading
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facegrid.cli import main
from facegrid.core.errors import FacegridError, PathError
from facegrid.wider import download, fetch
from facegrid.wider.download import Archive, Release
from facegrid.wider.fetch import STALL_BYTES, fetch_file
from facegrid.wider.unpack import unpack

VAL_IMAGE = "0--Parade/0_Parade_marchingband_1_5.jpg"

#: The last line of a run that put no archive in place.
NOTHING_PLACED = "error: no archive could be put in place (see the lines above)"


def _jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


#: Archive name -> its members, in the layout of the official release.
MEMBERS = {
    "wider_face_split.zip": {
        "wider_face_split/readme.txt": b"Attached the mappings between attribute names and label values.\n",
        "wider_face_split/wider_face_train_bbx_gt.txt": (
            b"0--Parade/0_Parade_Parade_0_1.jpg\n1\n5 5 20 20 0 0 0 0 0 0 \n"
        ),
        "wider_face_split/wider_face_val_bbx_gt.txt": f"{VAL_IMAGE}\n1\n10 12 30 40 0 0 0 0 0 0 \n".encode(),
    },
    "eval_tools.zip": {
        f"eval_tools/ground_truth/wider_{s}_val.mat": b"MATLAB 5.0" for s in ("face", "easy", "medium", "hard")
    },
    "WIDER_train.zip": {"WIDER_train/images/0--Parade/0_Parade_Parade_0_1.jpg": _jpeg()},
    "WIDER_val.zip": {f"WIDER_val/images/{VAL_IMAGE}": _jpeg()},
    "WIDER_test.zip": {"WIDER_test/images/0--Parade/0_Parade_marchingband_1_9.jpg": _jpeg()},
}
ZIPS = {name: _zip(members) for name, members in MEMBERS.items()}
PROVIDES = {
    "wider_face_split.zip": "wider_face_split/wider_face_val_bbx_gt.txt",
    "eval_tools.zip": "eval_tools/ground_truth/wider_face_val.mat",
    "WIDER_train.zip": "WIDER_train/images",
    "WIDER_val.zip": "WIDER_val/images",
    "WIDER_test.zip": "WIDER_test/images",
}


def _pinned(name: str, data: bytes | None = None) -> Archive:
    data = ZIPS[name] if data is None else data
    return Archive(name, PROVIDES.get(name, "escape"), sha256=hashlib.sha256(data).hexdigest(), size=len(data))


class _Mirrors(http.server.BaseHTTPRequestHandler):
    """GET /PREFIX/NAME: the archive NAME as the mode of mirror PREFIX says (``good`` unless set)."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        prefix, _, name = self.path.strip("/").partition("/")
        mode, data = server.modes.get(prefix, "good"), server.files.get(name)
        if mode == "slow":  # never answers while the test runs
            server.stop.wait(5)
            return
        if mode in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[mode].format(path=self.path))
            self.end_headers()
            return
        if mode == "trickles_headers":
            self._trickle(b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 1000)
            return
        if mode == "missing" or data is None:
            self.send_error(404)
            return
        if mode == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        if mode == "longer":  # a different file of the same name: one byte more than pinned
            data = data + b"\0"
        if mode == "endless":
            self._endless(data)
            return
        if mode == "gzip":
            data = gzip.compress(data)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        wanted = self.headers.get("Range", "")
        start = int(wanted.removeprefix("bytes=").removesuffix("-")) if wanted and mode != "ignores_range" else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if mode == "truncates" and self.path not in server.cut:  # the first answer stops halfway
            server.cut.add(self.path)
            body = body[: len(body) // 2]
        if mode == "trickles":
            self._trickle(body)
            return
        self.wfile.write(body)

    def _endless(self, data: bytes) -> None:
        """The file, then zeros without end, stating no length; notes the size of ``server.watch`` as it goes.

        A client that never stops reading ends the stream after 64 times the
        file, so that a broken client costs the test an assertion, not a hang.
        """
        self.send_response(200)
        self.end_headers()
        try:
            self.wfile.write(data)
            for _ in range(64 * len(data) // 4096):
                self.wfile.write(bytes(4096))
                watch = self.server.watch
                self.server.sizes.append(watch.stat().st_size if watch is not None and watch.exists() else 0)
        except OSError:  # the client hung up
            pass

    def _trickle(self, raw: bytes) -> None:
        """``raw`` a byte every 50 ms, until the client hangs up or the test ends."""
        try:
            for byte in raw:
                self.wfile.write(bytes([byte]))
                if self.server.stop.wait(0.05):
                    return
        except OSError:
            pass

    def log_message(self, *args):
        pass


#: Redirecting modes: where they send the client ({path}: the path asked for).
REDIRECTS = {
    "redirects_to_itself": "{path}",
    "redirects_to_ftp": "ftp://127.0.0.1:1/x.zip",
    "redirects_to_a_file": "file:///etc/passwd",
}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No proxy, and any connection to an address other than 127.0.0.1 fails the test."""
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    connect = socket.socket.connect

    def loopback_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            assert address[0] == "127.0.0.1", f"a test tried to reach {address}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_connect)


@pytest.fixture
def server(monkeypatch):
    """The loopback server, serving :data:`ZIPS`; the release downloaded is theirs, with mirrors m1 then m2."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirrors)
    httpd.files, httpd.modes, httpd.requests, httpd.cut, httpd.stop = dict(ZIPS), {}, [], set(), threading.Event()
    httpd.watch, httpd.sizes = None, []
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setitem(
        download.RELEASES,
        "widerface",
        Release(archives=tuple(_pinned(name) for name in ZIPS), mirrors=(f"{httpd.base}/m1/", f"{httpd.base}/m2/")),
    )
    yield httpd
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tree(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_good_copies_unpack_into_the_wider_layout_that_data_check_reads(server, tmp_path):
    to = tmp_path / "widerface"
    result = run("download", "widerface", "--to", to)
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{name}: from {server.base}/m1/{name}, sha256 verified, unpacked into {to}" for name in ZIPS
    ]
    members = {member for listed in MEMBERS.values() for member in listed}
    kept = {f"archives/{name}{suffix}" for name in ZIPS for suffix in ("", ".sha256")}
    assert tree(to) == members | kept
    check = run(
        "data", "check", to / "wider_face_split" / "wider_face_val_bbx_gt.txt", "--images", to / "WIDER_val" / "images"
    )
    assert check.exit_code == 0 and "1 images, 1 face rows" in check.output and "errors: none" in check.output

    asked = len(server.requests)
    again = run("download", "widerface", "--to", to)
    assert again.exit_code == 0 and len(server.requests) == asked  # nothing fetched, nothing hashed
    assert again.stdout.splitlines() == [f"{name}: already in place ({to / PROVIDES[name]})" for name in ZIPS]


def test_a_kept_archive_is_verified_and_unpacked_without_a_request(server, tmp_path):
    run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    (tmp_path / "archives" / "WIDER_val.zip.sha256").unlink()
    asked = len(server.requests)
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.stdout == f"WIDER_val.zip: downloaded before, sha256 verified, unpacked into {tmp_path}\n"
    assert len(server.requests) == asked


def test_a_corrupt_copy_is_deleted_and_the_next_mirror_tried(server, tmp_path):
    server.modes["m1"] = "corrupt"
    result = run("download", "widerface", "--to", tmp_path, "--only", "wider_face_split.zip")
    name, url = "wider_face_split.zip", f"{server.base}/m1/wider_face_split.zip"
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"{name}: {url}: sha256 {_corrupt_digest(name)} is not the pinned "
        f"{hashlib.sha256(ZIPS[name]).hexdigest()}; copy deleted"
    ]
    assert result.stdout.startswith(f"{name}: from {server.base}/m2/{name}, sha256 verified")
    assert (tmp_path / "archives" / name).read_bytes() == ZIPS[name]
    assert not (tmp_path / "archives" / f"{name}.part").exists()


def _corrupt_digest(name: str) -> str:
    data = ZIPS[name]
    return hashlib.sha256(data[:-1] + bytes([data[-1] ^ 0xFF])).hexdigest()


def test_a_copy_of_another_size_than_pinned_is_passed_over_on_its_length(server, tmp_path):
    server.modes["m1"] = "longer"
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    size = len(ZIPS["WIDER_val.zip"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"WIDER_val.zip: {server.base}/m1/WIDER_val.zip: offers {size + 1:,} bytes where the manifest says {size:,}"
    ]
    assert result.stdout.startswith(f"WIDER_val.zip: from {server.base}/m2/WIDER_val.zip, sha256 verified")


def test_a_response_cut_off_is_resumed_with_range(server, tmp_path):
    server.modes["m1"] = "truncates"
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    path, size = "/m1/WIDER_val.zip", len(ZIPS["WIDER_val.zip"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"WIDER_val.zip: {server.base}{path}: connection closed at {size // 2:,} of {size:,} bytes; asking for the rest"
    ]
    assert server.requests == [(path, None), (path, f"bytes={size // 2}-")]
    assert (tmp_path / "WIDER_val" / "images" / VAL_IMAGE).read_bytes() == MEMBERS["WIDER_val.zip"][
        f"WIDER_val/images/{VAL_IMAGE}"
    ]


def test_a_part_left_by_an_interrupted_run_is_resumed(server, tmp_path):
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "WIDER_val.zip.part").write_bytes(ZIPS["WIDER_val.zip"][:1000])
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.exit_code == 0 and result.stderr == ""
    assert server.requests == [("/m1/WIDER_val.zip", "bytes=1000-")]


def test_a_server_ignoring_range_restarts_the_file(server, tmp_path):
    server.modes["m1"] = "ignores_range"
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "WIDER_val.zip.part").write_bytes(ZIPS["WIDER_val.zip"][:1000])
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"WIDER_val.zip: {server.base}/m1/WIDER_val.zip: ignored the request to resume at byte 1,000; starting over"
    ]
    assert (tmp_path / "archives" / "WIDER_val.zip").read_bytes() == ZIPS["WIDER_val.zip"]


def test_a_slow_server_times_out_and_the_next_mirror_serves(server, tmp_path):
    server.modes["m1"] = "slow"
    result = run("download", "widerface", "--to", tmp_path, "--only", "eval_tools.zip", "--timeout", 0.3)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"eval_tools.zip: {server.base}/m1/eval_tools.zip: no answer within 0.3 s"]
    assert result.stdout.startswith(f"eval_tools.zip: from {server.base}/m2/eval_tools.zip")


def test_a_404_moves_to_the_next_mirror(server, tmp_path):
    server.modes["m1"] = "missing"
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_test.zip")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"WIDER_test.zip: {server.base}/m1/WIDER_test.zip: HTTP 404 Not Found"]
    assert "WIDER_test/images/0--Parade/0_Parade_marchingband_1_9.jpg" in tree(tmp_path)


def test_nothing_fetched_exits_2_after_a_line_per_mirror(server, tmp_path):
    server.modes.update(m1="missing", m2="corrupt")
    result = run("download", "widerface", "--to", tmp_path, "--only", "eval_tools.zip")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 4 and lines[0].endswith("HTTP 404 Not Found") and lines[1].endswith("copy deleted")
    assert lines[2:] == ["eval_tools.zip: not fetched: no address gave a good copy", NOTHING_PLACED]
    assert tree(tmp_path) == set()


def test_a_given_mirror_is_tried_first(server, tmp_path):
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip", "--mirror", f"{server.base}/m0")
    assert result.exit_code == 0 and server.requests == [("/m0/WIDER_val.zip", None)]


def test_an_unpinned_archive_is_refused_unless_trusted(server, tmp_path, monkeypatch):
    split = Archive("wider_face_split.zip", PROVIDES["wider_face_split.zip"])
    monkeypatch.setitem(
        download.RELEASES,
        "widerface",
        Release((split, _pinned("WIDER_val.zip")), download.RELEASES["widerface"].mirrors),
    )
    refused = run("download", "widerface", "--to", tmp_path)
    assert refused.exit_code == 1  # the pinned archive is in place, the other is not
    assert refused.stderr == (
        "wider_face_split.zip: refused: facegrid's manifest pins no sha256 for it; "
        "--trust-unpinned takes the copy a mirror serves\n"
    )
    assert ("/m1/wider_face_split.zip", None) not in server.requests
    trusted = run("download", "widerface", "--to", tmp_path, "--trust-unpinned", "--only", "wider_face_split.zip")
    assert trusted.exit_code == 0
    digest = hashlib.sha256(ZIPS["wider_face_split.zip"]).hexdigest()
    assert f"sha256 {digest} (none pinned; taken on trust)" in trusted.stdout


def test_an_archive_escaping_the_folder_is_refused_before_anything_is_written(server, tmp_path, monkeypatch):
    server.files["escape.zip"] = evil = _zip({"escape/fine.txt": b"x", "../outside.txt": b"x"})
    monkeypatch.setitem(
        download.RELEASES, "widerface", Release((_pinned("escape.zip", evil),), download.RELEASES["widerface"].mirrors)
    )
    to = tmp_path / "widerface"
    result = run("download", "widerface", "--to", to)
    assert result.exit_code == 2
    assert result.stderr == (
        f"{to / 'archives' / 'escape.zip'}: member '../outside.txt' refused ('..' in the path: "
        f"archive members must stay inside the folder unpacked into); nothing unpacked\n{NOTHING_PLACED}\n"
    )
    assert tree(tmp_path) == {"widerface/archives/escape.zip"}


@pytest.mark.parametrize("name", ["../x.txt", "a/../../x.txt", "/tmp/x.txt", "..\\x.txt", "C:\\x.txt", "C:x.txt"])
def test_unpack_refuses_absolute_and_climbing_members(tmp_path, name):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip({"ok.txt": b"x", name: b"x"}))
    with pytest.raises(PathError, match="refused"):
        unpack(archive, tmp_path / "into")
    assert not (tmp_path / "into").exists()


def test_unpack_refuses_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(PathError, match="not a readable zip archive"):
        unpack(tmp_path / "a.zip", tmp_path / "into")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--mirror", "ftp://example.org/"), "not an http:// or https:// address"),
        (("--mirror", "http://example.org/a b/"), "spaces or control characters in the address"),
        (("--mirror", "http://example.org/\u00fc/"), "characters outside ASCII after the host name"),
        (("--mirror", "http://example.org:65536/"), "not a usable address (Port out of range 0-65535)"),
        (("--mirror", "http://[::1/"), "not a usable address (Invalid IPv6 URL)"),
        (("--mirror", "http://user:secret@example.org/"), "a user name or password in the address"),
        (("--mirror", "http://" + "a" * 64 + ".org/"), "is not a valid host name"),
        (("--mirror", "http://b\u00fccher..org/"), "is not a valid host name"),
        (("--mirror", "http:///data/"), "no host name in the address"),
        (("--timeout", "1e300"), "is not in the range 0<x<=3600"),
        (("--only", "WIDER_nope.zip"), "no archive 'WIDER_nope.zip' in the release"),
    ],
)
def test_unusable_options_exit_2_in_one_line(server, tmp_path, args, message):
    result = run("download", "widerface", "--to", tmp_path, *args)
    assert result.exit_code == 2 and message in result.stderr and server.requests == []


def test_an_endless_stream_is_cut_at_the_pinned_size_and_passed_over(server, tmp_path):
    server.modes["m1"] = "endless"
    server.watch = tmp_path / "archives" / "WIDER_val.zip.part"
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    size = len(ZIPS["WIDER_val.zip"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"WIDER_val.zip: {server.base}/m1/WIDER_val.zip: sent more than the manifest's {size:,} bytes; copy deleted"
    ]
    assert max(server.sizes, default=0) <= size
    assert (tmp_path / "archives" / "WIDER_val.zip").read_bytes() == ZIPS["WIDER_val.zip"]


def test_an_endless_stream_of_a_file_pinned_by_no_size_is_cut_at_the_limit(server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "UNSIZED_LIMIT", 20_000)
    monkeypatch.setitem(
        download.RELEASES,
        "widerface",
        Release((Archive("WIDER_val.zip", PROVIDES["WIDER_val.zip"]),), (f"{server.base}/m1/",)),
    )
    server.modes["m1"], server.watch = "endless", tmp_path / "archives" / "WIDER_val.zip.part"
    result = run("download", "widerface", "--to", tmp_path, "--trust-unpinned")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"WIDER_val.zip: {server.base}/m1/WIDER_val.zip: sent more than 20,000 "
        "bytes without stating a length (the most facegrid takes so); copy deleted"
    )
    assert max(server.sizes, default=0) <= 20_000 and not server.watch.exists()


@pytest.mark.parametrize("mode", ["trickles", "trickles_headers"])
def test_a_trickling_server_is_given_up_as_stalled_within_about_twice_the_timeout(server, tmp_path, mode):
    server.modes["m1"] = mode
    started = time.monotonic()
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip", "--timeout", 0.3)
    assert time.monotonic() - started < 2  # the whole file would take minutes at a byte every 50 ms
    assert result.exit_code == 0
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        rf"WIDER_val\.zip: {server.base}/m1/WIDER_val\.zip: stalled: \d+ bytes in [0-9.]+ s, "
        rf"where {STALL_BYTES:,} are wanted every 0\.3 s",
        line,
    ), line
    assert result.stdout.startswith(f"WIDER_val.zip: from {server.base}/m2/WIDER_val.zip")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("redirects_to_itself", "a redirect loop"),
        ("redirects_to_ftp", "not an http:// or https:// address"),
        ("redirects_to_a_file", "Redirection to url 'file:///etc/passwd' is not allowed"),
        ("gzip", "sent the file with Content-Encoding 'gzip', not as it is"),
    ],
)
def test_bad_redirects_and_compressed_answers_cost_a_line_each(server, tmp_path, mode, reason):
    server.modes["m1"] = mode
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.exit_code == 0
    [line] = result.stderr.splitlines()
    assert line.startswith(f"WIDER_val.zip: {server.base}/m1/WIDER_val.zip: ") and line.endswith(reason)


def _bomb() -> bytes:
    """A one-member zip whose directory says the member unpacks to a pebibyte (more than any test disk has free)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("WIDER_val/images/big.jpg", b"x")
        zipped.filelist[0].file_size = 1 << 50
    return buffer.getvalue()


def test_an_archive_unpacking_to_more_than_is_free_is_refused_before_writing(server, tmp_path, monkeypatch):
    server.files["WIDER_val.zip"] = bomb = _bomb()
    monkeypatch.setitem(
        download.RELEASES,
        "widerface",
        Release((_pinned("WIDER_val.zip", bomb),), download.RELEASES["widerface"].mirrors),
    )
    result = run("download", "widerface", "--to", tmp_path)
    assert result.exit_code == 2
    first, last = result.stderr.splitlines()
    assert re.fullmatch(
        rf"{tmp_path}/archives/WIDER_val\.zip: unpacks to 1,125,899,906,842,624 bytes, more than "
        rf"the [0-9,]+ free at {tmp_path}; nothing unpacked",
        first,
    ), first
    assert last == NOTHING_PLACED
    assert tree(tmp_path) == {"archives/WIDER_val.zip"}


def test_a_file_of_yours_unlike_the_archives_is_refused_unless_overwrite(server, tmp_path):
    members = MEMBERS["wider_face_split.zip"]
    mine = tmp_path / "wider_face_split" / "readme.txt"
    mine.parent.mkdir()
    mine.write_bytes(b"my notes\n")
    refused = run("download", "widerface", "--to", tmp_path, "--only", "wider_face_split.zip")
    assert refused.exit_code == 2
    assert refused.stderr == f"error: {mine}: exists: pass --overwrite to replace it\n"
    assert mine.read_bytes() == b"my notes\n" and tree(tmp_path / "wider_face_split") == {"readme.txt"}
    replaced = run("download", "widerface", "--to", tmp_path, "--only", "wider_face_split.zip", "--overwrite")
    assert replaced.exit_code == 0 and replaced.stderr == ""
    assert mine.read_bytes() == members["wider_face_split/readme.txt"]


def test_files_as_an_interrupted_unpack_left_them_are_kept_and_the_rest_written(server, tmp_path):
    members = MEMBERS["wider_face_split.zip"]
    kept = list(members)[:2]
    for name in kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(members[name])
        os.utime(tmp_path / name, ns=(10**9, 10**9))  # written long ago
    result = run("download", "widerface", "--to", tmp_path, "--only", "wider_face_split.zip")
    assert result.exit_code == 0 and result.stderr == ""
    assert [(tmp_path / name).stat().st_mtime_ns for name in kept] == [10**9, 10**9]  # not written again
    assert all((tmp_path / name).read_bytes() == data for name, data in members.items())


@pytest.mark.parametrize(
    ("folder", "file", "message"),
    [
        (
            "WIDER_val/images/" + VAL_IMAGE,
            None,
            f"is a folder, where WIDER_val.zip has the file 'WIDER_val/images/{VAL_IMAGE}'; nothing unpacked",
        ),
        (
            "WIDER_val",
            "WIDER_val/images",
            f"is a file, where WIDER_val.zip has a folder (for 'WIDER_val/images/{VAL_IMAGE}'); nothing unpacked",
        ),
    ],
)
def test_a_folder_or_file_in_the_way_of_a_member_is_refused_in_one_line(server, tmp_path, folder, file, message):
    (tmp_path / folder).mkdir(parents=True)
    if file:
        (tmp_path / file).write_bytes(b"mine")
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{tmp_path / (file or folder)}: {message}", NOTHING_PLACED]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda to: (to / "archives" / "WIDER_val.zip.part").mkdir(parents=True),
            "archives/WIDER_val.zip.part: is a folder, where the download's copy goes; move it away",
        ),
        (
            lambda to: (to / "archives" / "WIDER_val.zip").mkdir(parents=True),
            "archives/WIDER_val.zip: is a folder, where the download's copy goes; move it away",
        ),
        (
            lambda to: (to / "archives" / "WIDER_val.zip.sha256").mkdir(parents=True),
            "archives/WIDER_val.zip.sha256: cannot read: Is a directory",
        ),
        (
            lambda to: (to / "archives").mkdir() or (to / "archives" / "WIDER_val.zip.part").symlink_to("/dev/full"),
            "archives/WIDER_val.zip.part: cannot write: No space left on device",
        ),
        (lambda to: (to / "file").write_bytes(b""), None),
    ],
    ids=["part-is-a-folder", "archive-is-a-folder", "stamp-is-a-folder", "disk-full", "under-a-file"],
)
def test_a_dataset_folder_that_cannot_take_the_archive_stops_with_one_line(server, tmp_path, setup, message):
    setup(tmp_path)
    to = tmp_path if message else tmp_path / "file" / "widerface"
    result = run("download", "widerface", "--to", to, "--only", "WIDER_val.zip")
    assert result.exit_code == 2
    expected = f"{tmp_path}/{message}" if message else f"{to}/archives: cannot make the folder: Not a directory"
    assert result.stderr == f"error: {expected}\n"


def test_a_stamp_that_is_not_facegrids_counts_as_none(server, tmp_path):
    run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    stamp = tmp_path / "archives" / "WIDER_val.zip.sha256"
    stamp.write_bytes(b"\xff\x00 not a digest\n" * 1000)
    result = run("download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.exit_code == 0 and result.stdout.startswith("WIDER_val.zip: downloaded before, sha256 verified")
    assert stamp.read_text() == f"{hashlib.sha256(ZIPS['WIDER_val.zip']).hexdigest()}  WIDER_val.zip\n"


def test_no_good_copy_is_a_facegrid_error(tmp_path):
    with pytest.raises(FacegridError, match="no address gave a good copy"):
        fetch_file(["ftp://127.0.0.1/x"], tmp_path / "x", notice=lambda line: None)


def test_verbose_shows_a_progress_bar(server, tmp_path):
    result = run("-v", "download", "widerface", "--to", tmp_path, "--only", "WIDER_val.zip")
    assert result.exit_code == 0 and "WIDER_val.zip: 100%" in result.stderr


def test_every_shipped_wider_archive_is_pinned_to_a_digest_and_a_size():
    archives = download.RELEASES["widerface"].archives
    assert sorted(a.name for a in archives) == sorted(PROVIDES)
    for archive in archives:
        assert re.fullmatch(r"[0-9a-f]{64}", archive.sha256), archive.name
        assert isinstance(archive.size, int) and archive.size > 0, archive.name
    assert len({a.sha256 for a in archives}) == len(archives)


def test_the_hub_serves_the_images_and_the_site_also_serves_the_small_archives():
    release = download.RELEASES["widerface"]
    hub = "https://huggingface.co/datasets/CUHK-CSE/wider_face/resolve/main/data"
    sites = ("http://shuoyang1213.me/WIDERFACE/support", "http://mmlab.ie.cuhk.edu.hk/projects/WIDERFace/support")
    folders = {"wider_face_split.zip": "bbx_annotation", "eval_tools.zip": "eval_script"}
    for archive in release.archives:
        homes = [f"{site}/{folders[archive.name]}/{archive.name}" for site in sites] if archive.name in folders else []
        assert download.archive_urls(archive, release.mirrors) == [f"{hub}/{archive.name}", *homes]
