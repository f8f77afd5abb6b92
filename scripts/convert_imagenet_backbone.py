"""Write the ImageNet backbone shipped with facegrid from torchvision's checkpoint.

Reproduces ``src/facegrid/models/mobilenet_v2_imagenet.weights.h5`` (what
``backbone_weights = "imagenet-bundled"`` loads) from torchvision's
``mobilenet_v2-b0353104.pth``, checking the checkpoint's SHA-256, and prints
the digests that ``src/facegrid/models/mobilenet_v2_imagenet.md`` records.
Needs torch beside facegrid (only this conversion does):

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch numpy h5py
    /tmp/tvenv/bin/pip install -e '.[train]'
    /tmp/tvenv/bin/python scripts/convert_imagenet_backbone.py --pth mobilenet_v2-b0353104.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pth", required=True, type=Path, help="torchvision's mobilenet_v2-b0353104.pth")
    parser.add_argument("--out", type=Path, help="where to write [default: the bundled file, in the source tree]")
    args = parser.parse_args(argv)

    import torch  # before TensorFlow loads: the other order can crash the process

    from facegrid.core.files import sha256_file
    from facegrid.core.resources import bundled_backbone_path
    from facegrid.model.from_torchvision import convert_torchvision_mobilenet_v2

    out = args.out or bundled_backbone_path()
    convert_torchvision_mobilenet_v2(args.pth, out)
    print(f"torch {torch.__version__}")
    print(f"{sha256_file(args.pth)}  {args.pth}")
    print(f"{sha256_file(out)}  {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
