"""Download or copy the external files listed in `convert.assets` and verify their checksums.

Files land under a root directory that the caller passes, in git-ignored folders:

- OMZ models in `models/<model>/<precision>/<file>`, the layout of the OMZ storage tree.
- Validation crops in `data/wider-12-group/<file>`.

By default each file is downloaded over HTTPS from its public URL. With a mirror directory laid
out like the source (`<model>/<precision>/<file>` for OMZ, `<file>` for the crops) the file is
copied from there instead. Either way the bytes go to a temporary file in the destination folder
and are renamed into place only after the size and digest match the table. After a failure
neither the temporary file nor a partial file is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from convert.assets import IMAGES, OMZ, OMZ_MODELS, OMZ_PRECISIONS, Asset, image_files, model_files

logger = logging.getLogger(__name__)

MODELS_DIR = Path("models")
IMAGES_DIR = Path("data", "wider-12-group")

_CHUNK_SIZE = 1 << 20

# Environment variable and layout that the error messages suggest for offline use, per source.
# The Makefile passes these variables to the CLI as --omz-mirror and --images-mirror.
_MIRROR_VARIABLES = {OMZ: "OMZ_MIRROR", IMAGES: "IMAGES_MIRROR"}
_MIRROR_LAYOUTS = {OMZ: "<model>/<precision>/<file>", IMAGES: "<file>"}


class AssetError(Exception):
    """Base class of the errors raised while fetching or verifying an external file."""


class UnknownAssetError(AssetError):
    """Raised for a model or precision that the asset table does not list."""


class DownloadError(AssetError):
    """Raised when an HTTP request fails, times out or cannot connect."""


class MirrorMissingFileError(AssetError):
    """Raised when a mirror directory does not contain a file that must be copied from it."""


class SizeMismatchError(AssetError):
    """Raised when a fetched file has a different size than the table lists."""


class TruncatedTransferError(SizeMismatchError):
    """Raised when a download ends before the number of bytes the server announced."""


class ChecksumMismatchError(AssetError):
    """Raised when the digest of a fetched file differs from the table.

    `path` is the destination that was not written, `origin` the URL or mirror file.
    """

    def __init__(self, path: Path, origin: str, algorithm: str, expected: str, actual: str) -> None:
        self.path = path
        self.origin = origin
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Checksum mismatch for {path.name} from {origin}: expected {_algorithm_label(algorithm)} {expected}, "
            f"actual {actual}. The file was discarded. Check that the source contains the published file."
        )


def _algorithm_label(algorithm: str) -> str:
    """Return the usual spelling of a hashlib name, for example "SHA-384" for "sha384"."""
    label = algorithm.upper()
    return label.replace("SHA", "SHA-", 1) if label[3:].isdigit() else label


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Return the lowercase hex digest of a file, `algorithm` being a `hashlib` name."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()


def sha384_file(path: str | os.PathLike[str]) -> str:
    """Return the SHA-384 hex digest of a file, the checksum that OMZ's model.yml lists."""
    return file_digest(path, "sha384")


def fetch_model(
    model: str,
    precision: str,
    root: Path,
    omz_mirror: Path | None = None,
    timeout: float = 60.0,
    base_url: str | None = None,
) -> tuple[Path, Path]:
    """Fetch and verify one OMZ model under `root/models` and return its (xml_path, bin_path).

    Files already present with the right checksum are kept, and a present file with a wrong size
    or checksum is deleted and fetched again. With `omz_mirror` the files are copied from that
    directory. Otherwise they are downloaded from their URL in the asset table, or from
    `<base_url>/<model>/<precision>/<file>` when `base_url` is given. `timeout` is in seconds and
    applies to connecting and to each read.

    Raises UnknownAssetError for a model or precision not in the table, MirrorMissingFileError
    before anything is copied when the mirror lacks a needed file, and other AssetError subclasses
    when a transfer or a check fails.
    """
    assets = _lookup_model_files(model, precision)
    root = Path(root)
    destinations = [root / MODELS_DIR / asset.relative_path for asset in assets]
    mirror = _check_mirror_dir(omz_mirror, OMZ)

    pending = _pending_assets(assets, destinations)
    if mirror is not None:
        _check_mirror_has_model(pending, mirror, model, precision)
    _fetch_pending(pending, mirror, base_url, timeout)

    return destinations[0], destinations[1]


def fetch_images(
    root: Path,
    images_mirror: Path | None = None,
    timeout: float = 60.0,
    base_url: str | None = None,
) -> list[Path]:
    """Fetch and verify the ten validation crops under `root/data/wider-12-group`.

    Returns the crop paths sorted by name. Mirror, `base_url` and `timeout` work as in
    `fetch_model`, with the mirror laid out as `<file>`.
    """
    assets = image_files()
    root = Path(root)
    destinations = [root / IMAGES_DIR / asset.relative_path for asset in assets]
    mirror = _check_mirror_dir(images_mirror, IMAGES)

    pending = _pending_assets(assets, destinations)
    if mirror is not None:
        _check_mirror_has_images(pending, mirror)
    _fetch_pending(pending, mirror, base_url, timeout)

    return sorted(destinations)


def _lookup_model_files(model: str, precision: str) -> tuple[Asset, Asset]:
    if model not in OMZ_MODELS:
        raise UnknownAssetError(f"Unknown OMZ model {model!r}. Valid models: {', '.join(OMZ_MODELS)}.")
    if precision not in OMZ_PRECISIONS:
        raise UnknownAssetError(
            f"Unknown precision {precision!r} for {model}. Valid precisions: {', '.join(OMZ_PRECISIONS)}."
        )

    xml_asset, bin_asset = model_files(model, precision)
    return xml_asset, bin_asset


def _check_mirror_dir(mirror: Path | None, source: str) -> Path | None:
    if mirror is None:
        return None

    mirror = Path(mirror)
    if not mirror.is_dir():
        variable = _MIRROR_VARIABLES[source]
        raise AssetError(
            f"Mirror directory not found: {mirror}. Set {variable} to a directory laid out like "
            f"{_MIRROR_LAYOUTS[source]}, or leave {variable} unset to download the files."
        )
    return mirror


def _pending_assets(assets: Sequence[Asset], destinations: Sequence[Path]) -> list[tuple[Asset, Path]]:
    """Return the (asset, destination) pairs that are not yet present with the right checksum."""
    return [
        (asset, destination)
        for asset, destination in zip(assets, destinations)
        if not _verify_present(asset, destination)
    ]


def _verify_present(asset: Asset, destination: Path) -> bool:
    """Return True if `destination` matches the table, and delete it if it exists but does not."""
    if not destination.is_file():
        return False

    size = destination.stat().st_size
    if asset.size is not None and size != asset.size:
        logger.warning(
            "%s is present but has %d bytes, expected %d. Deleting it and fetching it again",
            destination, size, asset.size,
        )
        destination.unlink()
        return False

    actual = file_digest(destination, asset.algorithm)
    if actual != asset.digest:
        logger.warning(
            "%s is present but its %s is %s, expected %s. Deleting it and fetching it again",
            destination, _algorithm_label(asset.algorithm), actual, asset.digest,
        )
        destination.unlink()
        return False

    logger.info("%s is present and verified (%s)", destination, _algorithm_label(asset.algorithm))
    return True


def _check_mirror_has_model(
    pending: Sequence[tuple[Asset, Path]],
    mirror: Path,
    model: str,
    precision: str,
) -> None:
    missing = [asset for asset, _ in pending if not (mirror / asset.relative_path).is_file()]
    if not missing:
        return

    complete = [
        other for other in OMZ_PRECISIONS if other != precision and _mirror_has_precision(mirror, model, other)
    ]
    if complete:
        alternatives = " or ".join(f"PRECISION={other}" for other in complete)
        suggestion = f"Use {alternatives}, which this mirror contains, or run without OMZ_MIRROR to download"
    else:
        suggestion = "Run without OMZ_MIRROR to download"

    names = ", ".join(str(mirror / asset.relative_path) for asset in missing)
    pronoun = "it" if len(missing) == 1 else "them"
    urls = ", ".join(asset.url for asset in missing)
    raise MirrorMissingFileError(
        f"The OMZ mirror {mirror} lacks {names}, which {model} {precision} needs. "
        f"{suggestion} {pronoun} from {urls}."
    )


def _mirror_has_precision(mirror: Path, model: str, precision: str) -> bool:
    return all((mirror / asset.relative_path).is_file() for asset in model_files(model, precision))


def _check_mirror_has_images(pending: Sequence[tuple[Asset, Path]], mirror: Path) -> None:
    missing = [asset for asset, _ in pending if not (mirror / asset.relative_path).is_file()]
    if missing:
        names = ", ".join(asset.name for asset in missing)
        raise MirrorMissingFileError(
            f"The image mirror {mirror} lacks {names}. Add them there, or run without IMAGES_MIRROR to "
            f"download them from {missing[0].url.rsplit('/', 1)[0]}/."
        )


def _fetch_pending(
    pending: Sequence[tuple[Asset, Path]],
    mirror: Path | None,
    base_url: str | None,
    timeout: float,
) -> None:
    for asset, destination in pending:
        if mirror is not None:
            _copy_from_mirror(asset, mirror / asset.relative_path, destination)
        elif base_url is not None:
            _download(asset, f"{base_url.rstrip('/')}/{asset.relative_path}", destination, timeout)
        else:
            _download(asset, asset.url, destination, timeout)


def _copy_from_mirror(asset: Asset, source: Path, destination: Path) -> None:
    start = time.monotonic()
    with open(source, "rb") as file:
        chunks = iter(lambda: file.read(_CHUNK_SIZE), b"")
        size = _write_verified(asset, destination, chunks, str(source))

    logger.info("Copied %s (%d bytes) from %s in %.2f s", destination, size, source, time.monotonic() - start)


def _download(asset: Asset, url: str, destination: Path, timeout: float) -> None:
    logger.info("Downloading %s from %s", destination.name, url)
    start = time.monotonic()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"Download of {destination.name} failed with HTTP {error.code} {error.reason} for {url}. "
            f"{_offline_hint(asset)}"
        ) from error
    except (OSError, http.client.HTTPException) as error:
        # urllib wraps errors of sending the request in URLError but raises errors of reading the
        # status line (a timeout, a dropped connection) as they are.
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError):
            failure = f"timed out after {timeout} s"
        else:
            failure = f"failed ({str(reason) or type(reason).__name__})"
        raise DownloadError(
            f"Download of {destination.name} from {url} {failure}. {_offline_hint(asset)}"
        ) from error

    with response:
        content_length = _content_length(response)
        if content_length is not None and asset.size is not None and content_length != asset.size:
            raise SizeMismatchError(
                f"{url} reports Content-Length {content_length} for {destination.name}, expected {asset.size} "
                f"bytes. Check that the URL serves the published file."
            )

        chunks = _read_response(response, url, destination.name, content_length, timeout)
        size = _write_verified(asset, destination, chunks, url)

    logger.info("Downloaded %s (%d bytes) from %s in %.2f s", destination, size, url, time.monotonic() - start)


def _offline_hint(asset: Asset) -> str:
    variable = _MIRROR_VARIABLES[asset.source]
    return (
        f"Check the network, or for offline use set {variable}=DIR to copy from a local directory "
        f"laid out like {_MIRROR_LAYOUTS[asset.source]}."
    )


def _content_length(response: http.client.HTTPResponse) -> int | None:
    header = response.headers.get("Content-Length")
    if header is None or not header.strip().isdigit():
        return None
    return int(header)


def _read_response(
    response: http.client.HTTPResponse,
    url: str,
    name: str,
    content_length: int | None,
    timeout: float,
) -> Iterator[bytes]:
    """Yield the response body in chunks and raise if it ends before `content_length` bytes."""
    received = 0
    try:
        while chunk := response.read(_CHUNK_SIZE):
            received += len(chunk)
            yield chunk
    except http.client.IncompleteRead as error:
        raise TruncatedTransferError(
            f"Download of {name} from {url} was truncated after {received} bytes. Retry the download."
        ) from error
    except TimeoutError as error:
        raise DownloadError(
            f"Download of {name} from {url} timed out after {received} bytes (timeout {timeout} s)."
        ) from error
    except OSError as error:
        raise DownloadError(f"Download of {name} from {url} failed after {received} bytes: {error}.") from error

    # http.client (Python 3.11) returns an empty read, not an error, when the connection closes early.
    if content_length is not None and received < content_length:
        raise TruncatedTransferError(
            f"Download of {name} from {url} was truncated: received {received} of {content_length} bytes. "
            f"Retry the download."
        )


def _write_verified(asset: Asset, destination: Path, chunks: Iterable[bytes], origin: str) -> int:
    """Write `chunks` to a temporary file, check size and digest, then rename it to `destination`.

    Returns the number of bytes written. On any error the temporary file is deleted.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:12]}.part")
    hasher = hashlib.new(asset.algorithm)
    size = 0

    try:
        # Mode "xb" creates the file with the umask applied, so the renamed file gets the usual permissions.
        with open(temporary, "xb") as file:
            for chunk in chunks:
                size += len(chunk)
                if asset.size is not None and size > asset.size:
                    raise SizeMismatchError(
                        f"{destination.name} from {origin} is larger than the expected {asset.size} bytes. "
                        f"Check that the source contains the published file."
                    )
                hasher.update(chunk)
                file.write(chunk)

        if asset.size is not None and size != asset.size:
            raise SizeMismatchError(
                f"{destination.name} from {origin} has {size} bytes, expected {asset.size}. "
                f"Check that the source contains the complete published file."
            )

        actual = hasher.hexdigest()
        if actual != asset.digest:
            raise ChecksumMismatchError(destination, origin, asset.algorithm, asset.digest, actual)

        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

    return size
