"""Command line: graft a cosine-similarity head onto a backbone ONNX file.

Example: python -m postprocess build/FP16/face-reidentification-retail-0095_Nx3x128x128.onnx --head pair --unclipped
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from convert import models
from convert.pipeline import load_crops
from convert.registry import ExportError
from postprocess.build import HEAD_KINDS, export_head, head_file_name

log = logging.getLogger("postprocess")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m postprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", type=Path, help="backbone ONNX with input `images` [N,3,128,128]")
    parser.add_argument("--head", choices=HEAD_KINDS, default="pair",
                        help="pair: base and target images in; gallery: images and saved embeddings in")
    parser.add_argument("--unclipped", action="store_true",
                        help="keep the cosine similarity in [-1, 1] instead of clipping it to [0, 1]")
    parser.add_argument("--images", type=Path, default=Path("data/wider-12-group"),
                        help="images used to verify the head against the backbone (default: data/wider-12-group)")
    parser.add_argument("--output", type=Path, default=None,
                        help="output file (default: next to the backbone, named after the head)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    if not args.backbone.is_file():
        log.error("%s: backbone ONNX file not found; run `make convert` first", args.backbone)
        return 2
    image_paths = sorted(args.images.glob("*.jpg")) + sorted(args.images.glob("*.png"))
    if len(image_paths) < 2:
        log.error("%s: at least two .jpg or .png images are needed to verify the head", args.images)
        return 2

    clip = not args.unclipped
    output = args.output or args.backbone.with_name(head_file_name(args.backbone.stem, args.head, clip))
    try:
        export_head(args.backbone, args.head, clip, load_crops(image_paths, models.REIDENTIFICATION_SIZE), output)
    except (ExportError, ValueError) as error:
        log.error("%s", error)
        return 2
    log.info("wrote %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
