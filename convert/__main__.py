"""Command line of the converter: `python -m convert --precision FP16` (what `make convert` runs)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from convert import models
from convert.fetch import AssetError
from convert.registry import ExportError

log = logging.getLogger("convert")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    parser.add_argument("--precision", default="FP16", choices=models.PRECISIONS,
                        help="which OMZ IR precision to convert (default: FP16)")
    parser.add_argument("--build-dir", type=Path, default=Path("build"),
                        help="artifacts go to BUILD_DIR/PRECISION (default: build)")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="folder that receives models/ and data/ (default: the current folder)")
    parser.add_argument("--omz-mirror", type=Path, default=None,
                        help="copy the IRs from this folder (laid out like OMZ: MODEL/PRECISION/FILE) "
                             "instead of downloading them")
    parser.add_argument("--images-mirror", type=Path, default=None,
                        help="copy the ten validation crops from this folder instead of downloading them")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from convert.pipeline import convert_all
    from convert.tflite import TFLiteExportError

    started = time.perf_counter()
    try:
        convert_all(args.precision, args.build_dir, args.root, args.omz_mirror, args.images_mirror)
    except (AssetError, ExportError, TFLiteExportError) as error:
        log.error("%s", error)
        return 1
    log.info("make convert finished in %.1f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
