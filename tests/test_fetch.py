"""Tests of the verified asset fetch against a local HTTP server and local mirror directories.

The server binds 127.0.0.1 on a free port and serves a temporary copy of the shared OMZ mirror and
crops, so the real download code runs without any other network access. `shared_dir` comes from
conftest.py. Most tests use landmarks-regression-retail-0009 because its files are small.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from convert import assets
from convert.fetch import (
    AssetError,
    ChecksumMismatchError,
    DownloadError,
    MirrorMissingFileError,
    SizeMismatchError,
    TruncatedTransferError,
    UnknownAssetError,
    fetch_images,
    fetch_model,
    file_digest,
    sha384_file,
)

LANDMARKS = "landmarks-regression-retail-0009"
REID = "face-reidentification-retail-0095"
LANDMARKS_FP16 = f"{LANDMARKS}/FP16/{LANDMARKS}"

logger = logging.getLogger(__name__)


class _MirrorRequestHandler(SimpleHTTPRequestHandler):
    """Serve files, count GET requests per path and truncate the bodies of selected paths."""

    server: _MirrorHTTPServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.request_counts[self.path] += 1

        if self.path in self.server.truncated_paths:
            self._send_truncated()
        else:
            super().do_GET()

    def _send_truncated(self) -> None:
        # Announce the full length, send half of the body, then close the connection.
        body = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("test server: " + format, *args)


class _MirrorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_MirrorRequestHandler, directory=str(directory))
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.truncated_paths: set[str] = set()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # The client closes the connection early when it rejects a response, for example on a
        # Content-Length that differs from the table, so a broken pipe here is expected.
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("test server: client %s closed the connection early", client_address)
        else:
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib would send requests for 127.0.0.1 through a proxy set in the environment.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def _copy_writable(source: Path, destination: Path) -> None:
    """Copy a tree without its permissions, because the shared files and folders are read-only."""
    shutil.copytree(source, destination, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(destination):
        os.chmod(folder, 0o755)


@pytest.fixture
def served_dir(tmp_path: Path, shared_dir: Path) -> Path:
    """A writable copy of the landmarks model, the FP32 re-identification .xml and the crops."""
    served = tmp_path / "served"
    _copy_writable(shared_dir / "omz" / LANDMARKS, served / "omz" / LANDMARKS)
    _copy_writable(shared_dir / "omz" / REID / "FP32", served / "omz" / REID / "FP32")
    _copy_writable(shared_dir / "images" / "wider-12-group", served / "images")
    return served


@pytest.fixture
def server(served_dir: Path) -> Iterator[_MirrorHTTPServer]:
    httpd = _MirrorHTTPServer(served_dir)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _files_under(folder: Path) -> list[str]:
    """Return the names of all files below `folder`, hidden temporary files included."""
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


def _table_entry(relative_path: str) -> assets.Asset:
    (entry,) = [asset for asset in assets.ASSETS if asset.relative_path == relative_path]
    return entry


# The asset table


@pytest.mark.parametrize("model", assets.OMZ_MODELS)
def test_table_matches_omz_model_yml(shared_dir: Path, model: str) -> None:
    model_yml = yaml.safe_load((shared_dir / "omz" / model / "model.yml").read_text())
    expected = {
        f"{model}/{entry['name']}": (entry["source"], entry["size"], entry["checksum"])
        for entry in model_yml["files"]
    }
    table = {
        asset.relative_path: (asset.url, asset.size, asset.digest)
        for asset in assets.ASSETS
        if asset.relative_path.startswith(f"{model}/")
    }

    assert table == expected
    assert all(asset.algorithm == "sha384" for asset in assets.ASSETS if asset.source == assets.OMZ)


def test_table_lists_three_precisions_per_model() -> None:
    for model in assets.OMZ_MODELS:
        for precision in assets.OMZ_PRECISIONS:
            names = [asset.name for asset in assets.model_files(model, precision)]
            assert names == [f"{model}.xml", f"{model}.bin"], (model, precision)


def test_table_crop_digests_match_files(shared_dir: Path) -> None:
    crops = assets.image_files()
    names = [f"12_Group_Group_12_Group_Group_12_10_{index:04d}.jpg" for index in range(10)]

    assert [crop.name for crop in crops] == names
    for crop in crops:
        assert crop.algorithm == "sha256"
        assert crop.url == f"{assets.IMAGES_BASE_URL}/{crop.name}"
        assert file_digest(shared_dir / "images" / "wider-12-group" / crop.name, "sha256") == crop.digest


def test_sha384_file_matches_table(shared_dir: Path) -> None:
    asset = _table_entry(f"{LANDMARKS_FP16}.xml")
    assert sha384_file(shared_dir / "omz" / asset.relative_path) == asset.digest


# Downloads from the local server


def test_download_model(server: _MirrorHTTPServer, root: Path) -> None:
    xml_path, bin_path = fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    assert xml_path == root / "models" / f"{LANDMARKS_FP16}.xml"
    assert bin_path == root / "models" / f"{LANDMARKS_FP16}.bin"
    assert sha384_file(xml_path) == _table_entry(f"{LANDMARKS_FP16}.xml").digest
    assert sha384_file(bin_path) == _table_entry(f"{LANDMARKS_FP16}.bin").digest
    assert _files_under(root) == [bin_path.name, xml_path.name]
    assert server.request_counts == {f"/omz/{LANDMARKS_FP16}.xml": 1, f"/omz/{LANDMARKS_FP16}.bin": 1}


def test_download_images(server: _MirrorHTTPServer, root: Path) -> None:
    paths = fetch_images(root, base_url=f"{server.url}/images")

    assert len(paths) == 10
    assert paths == sorted(paths)
    assert all(path.parent == root / "data" / "wider-12-group" for path in paths)
    for path, crop in zip(paths, assets.image_files()):
        assert file_digest(path, "sha256") == crop.digest


def test_download_tampered_file(server: _MirrorHTTPServer, served_dir: Path, root: Path) -> None:
    served_bin = served_dir / "omz" / f"{LANDMARKS_FP16}.bin"
    _flip_last_byte(served_bin)
    expected = _table_entry(f"{LANDMARKS_FP16}.bin").digest

    with pytest.raises(ChecksumMismatchError) as caught:
        fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    message = str(caught.value)
    assert f"{LANDMARKS}.bin" in message
    assert expected in message
    assert sha384_file(served_bin) in message
    assert _files_under(root) == [f"{LANDMARKS}.xml"]


def test_download_truncated_transfer(server: _MirrorHTTPServer, root: Path) -> None:
    server.truncated_paths.add(f"/omz/{LANDMARKS_FP16}.bin")

    with pytest.raises(TruncatedTransferError) as caught:
        fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    assert f"{LANDMARKS}.bin" in str(caught.value)
    assert "truncated" in str(caught.value)
    assert _files_under(root) == [f"{LANDMARKS}.xml"]


def test_download_larger_than_table(server: _MirrorHTTPServer, served_dir: Path, root: Path) -> None:
    served_xml = served_dir / "omz" / f"{LANDMARKS_FP16}.xml"
    served_xml.write_bytes(served_xml.read_bytes() + b"\n")

    with pytest.raises(SizeMismatchError) as caught:
        fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    assert f"{LANDMARKS}.xml" in str(caught.value)
    assert _files_under(root) == []


def test_download_404_suggests_omz_mirror(server: _MirrorHTTPServer, served_dir: Path, root: Path) -> None:
    (served_dir / "omz" / f"{LANDMARKS_FP16}.bin").unlink()
    url = f"{server.url}/omz/{LANDMARKS_FP16}.bin"

    with pytest.raises(DownloadError) as caught:
        fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    message = str(caught.value)
    assert url in message
    assert "404" in message
    assert "OMZ_MIRROR=DIR" in message
    assert _files_under(root) == [f"{LANDMARKS}.xml"]


def test_download_404_suggests_images_mirror(server: _MirrorHTTPServer, root: Path) -> None:
    with pytest.raises(DownloadError) as caught:
        fetch_images(root, base_url=f"{server.url}/no-such-folder")

    assert f"{server.url}/no-such-folder/12_Group_Group_12_Group_Group_12_10_0000.jpg" in str(caught.value)
    assert "IMAGES_MIRROR=DIR" in str(caught.value)
    assert _files_under(root) == []


def test_download_connection_refused(root: Path) -> None:
    # Bind and close a socket to get a local port that nothing listens on.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/omz"

    with pytest.raises(DownloadError) as caught:
        fetch_model(LANDMARKS, "FP16", root, base_url=base_url, timeout=5.0)

    assert f"{base_url}/{LANDMARKS_FP16}.xml" in str(caught.value)
    assert "OMZ_MIRROR=DIR" in str(caught.value)
    assert _files_under(root) == []


def test_download_timeout(root: Path) -> None:
    # The socket listens but never accepts, so the request waits for a response that never comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        with pytest.raises(DownloadError) as caught:
            fetch_model(LANDMARKS, "FP16", root, base_url=f"http://127.0.0.1:{port}", timeout=0.5)

    assert "timed out after 0.5 s" in str(caught.value)
    assert _files_under(root) == []


# Files already present


def test_present_files_not_fetched_again(
    server: _MirrorHTTPServer, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    xml_path, bin_path = fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")
    mtimes = (xml_path.stat().st_mtime_ns, bin_path.stat().st_mtime_ns)
    counts = dict(server.request_counts)

    with caplog.at_level(logging.INFO, logger="convert.fetch"):
        again = fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    assert again == (xml_path, bin_path)
    assert dict(server.request_counts) == counts
    assert (xml_path.stat().st_mtime_ns, bin_path.stat().st_mtime_ns) == mtimes
    assert caplog.text.count("present and verified") == 2


def test_corrupt_present_file_fetched_again(
    server: _MirrorHTTPServer, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, bin_path = fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")
    _flip_last_byte(bin_path)

    with caplog.at_level(logging.INFO, logger="convert.fetch"):
        fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    assert server.request_counts[f"/omz/{LANDMARKS_FP16}.xml"] == 1
    assert server.request_counts[f"/omz/{LANDMARKS_FP16}.bin"] == 2
    assert sha384_file(bin_path) == _table_entry(f"{LANDMARKS_FP16}.bin").digest
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert bin_path.name in warnings[0].getMessage()


def test_short_present_file_fetched_again(server: _MirrorHTTPServer, root: Path) -> None:
    _, bin_path = fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")
    bin_path.write_bytes(bin_path.read_bytes()[:100])

    fetch_model(LANDMARKS, "FP16", root, base_url=f"{server.url}/omz")

    assert server.request_counts[f"/omz/{LANDMARKS_FP16}.bin"] == 2
    assert sha384_file(bin_path) == _table_entry(f"{LANDMARKS_FP16}.bin").digest


# Mirror mode


def test_mirror_copies_model(shared_dir: Path, root: Path) -> None:
    xml_path, bin_path = fetch_model(LANDMARKS, "FP16-INT8", root, omz_mirror=shared_dir / "omz")

    assert xml_path == root / "models" / LANDMARKS / "FP16-INT8" / f"{LANDMARKS}.xml"
    assert sha384_file(xml_path) == sha384_file(shared_dir / "omz" / LANDMARKS / "FP16-INT8" / f"{LANDMARKS}.xml")
    assert sha384_file(bin_path) == sha384_file(shared_dir / "omz" / LANDMARKS / "FP16-INT8" / f"{LANDMARKS}.bin")
    assert os.access(bin_path, os.W_OK)
    assert _files_under(root) == [bin_path.name, xml_path.name]


def test_mirror_copies_images(shared_dir: Path, root: Path) -> None:
    paths = fetch_images(root, images_mirror=shared_dir / "images" / "wider-12-group")

    assert [path.name for path in paths] == [crop.name for crop in assets.image_files()]
    for path, crop in zip(paths, assets.image_files()):
        assert file_digest(path, "sha256") == crop.digest


def test_mirror_without_fp32_bin(shared_dir: Path, root: Path) -> None:
    with pytest.raises(MirrorMissingFileError) as caught:
        fetch_model(REID, "FP32", root, omz_mirror=shared_dir / "omz")

    message = str(caught.value)
    assert f"{REID}/FP32/{REID}.bin" in message
    assert "lacks" in message
    assert "PRECISION=FP16" in message
    assert "without OMZ_MIRROR" in message
    # The check runs before anything is copied, so the FP32 .xml is not copied either.
    assert _files_under(root) == []


def test_mirror_tampered_file(served_dir: Path, root: Path) -> None:
    mirror_bin = served_dir / "omz" / f"{LANDMARKS_FP16}.bin"
    _flip_last_byte(mirror_bin)

    with pytest.raises(ChecksumMismatchError) as caught:
        fetch_model(LANDMARKS, "FP16", root, omz_mirror=served_dir / "omz")

    message = str(caught.value)
    assert str(mirror_bin) in message
    assert _table_entry(f"{LANDMARKS_FP16}.bin").digest in message
    assert sha384_file(mirror_bin) in message
    assert _files_under(root) == [f"{LANDMARKS}.xml"]


def test_mirror_lacking_present_file(served_dir: Path, root: Path) -> None:
    mirror = served_dir / "omz"
    fetch_model(LANDMARKS, "FP16", root, omz_mirror=mirror)
    (mirror / f"{LANDMARKS_FP16}.bin").unlink()

    _, bin_path = fetch_model(LANDMARKS, "FP16", root, omz_mirror=mirror)

    assert sha384_file(bin_path) == _table_entry(f"{LANDMARKS_FP16}.bin").digest


def test_mirror_missing_image(served_dir: Path, root: Path) -> None:
    (served_dir / "images" / "12_Group_Group_12_Group_Group_12_10_0003.jpg").unlink()

    with pytest.raises(MirrorMissingFileError) as caught:
        fetch_images(root, images_mirror=served_dir / "images")

    assert "12_Group_Group_12_Group_Group_12_10_0003.jpg" in str(caught.value)
    assert "without IMAGES_MIRROR" in str(caught.value)
    assert _files_under(root) == []


def test_mirror_directory_not_found(tmp_path: Path, root: Path) -> None:
    with pytest.raises(AssetError) as caught:
        fetch_model(LANDMARKS, "FP16", root, omz_mirror=tmp_path / "missing")

    assert str(tmp_path / "missing") in str(caught.value)
    assert "OMZ_MIRROR" in str(caught.value)


# Invalid requests


def test_unknown_model_lists_choices(root: Path) -> None:
    with pytest.raises(UnknownAssetError) as caught:
        fetch_model("face-reidentification-retail-0096", "FP16", root)

    for model in assets.OMZ_MODELS:
        assert model in str(caught.value)


def test_unknown_precision_lists_choices(root: Path) -> None:
    with pytest.raises(UnknownAssetError) as caught:
        fetch_model(LANDMARKS, "INT8", root)

    assert "'INT8'" in str(caught.value)
    for precision in assets.OMZ_PRECISIONS:
        assert precision in str(caught.value)
