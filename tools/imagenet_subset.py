"""An ImageNet subset (e.g. ImageNet-100) as a folder of symlinks, for `--dataset imagefolder:OUT`.

    python tools/imagenet_subset.py CLASS_LIST --imagenet IMAGENET_ROOT --out OUT

CLASS_LIST holds one wnid per line (`n01558993`; anything after the first word, blank lines and `#` comments are
ignored), e.g. the 100 classes of CMC's ImageNet-100. IMAGENET_ROOT holds `train/` and `val/` folders of one
folder per wnid (the validation images sorted into class folders, as most copies are). OUT gets `train/WNID` and
`val/WNID` symlinks to those class folders: nothing is copied.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

WNID = re.compile(r"^n\d{8}$")


def read_class_list(path: Path) -> list[str]:
    wnids = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not WNID.match(words[0]):
            raise SystemExit(f"imagenet_subset: {path} line {number}: {words[0]!r} is not a wnid like n01558993")
        wnids.append(words[0])
    if not wnids:
        raise SystemExit(f"imagenet_subset: {path} lists no wnids")
    return list(dict.fromkeys(wnids))  # keep the order, drop repeats


def link_subset(wnids: list[str], imagenet: Path, out: Path) -> dict[str, int]:
    """Symlink each split's class folders; returns the number of classes linked per split."""
    splits = [split for split in ("train", "val") if (imagenet / split).is_dir()]
    if "train" not in splits:
        raise SystemExit(f"imagenet_subset: {imagenet / 'train'} not found; --imagenet must hold train/ (and val/)")
    missing = [f"{split}/{wnid}" for split in splits for wnid in wnids if not (imagenet / split / wnid).is_dir()]
    if missing:
        raise SystemExit(f"imagenet_subset: {imagenet} lacks {len(missing)} class folders (e.g. {missing[:3]}); "
                         "val/ must be sorted into class folders")
    for split in splits:
        (out / split).mkdir(parents=True, exist_ok=True)
        for wnid in wnids:
            link = out / split / wnid
            if link.is_symlink():
                link.unlink()  # re-running points the links at the new root
            link.symlink_to((imagenet / split / wnid).resolve(), target_is_directory=True)
    return {split: len(wnids) for split in splits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("class_list", type=Path, help="text file with one wnid per line")
    parser.add_argument("--imagenet", type=Path, required=True, help="ImageNet root with train/ and val/")
    parser.add_argument("--out", type=Path, required=True, help="the folder of symlinks to create")
    args = parser.parse_args(argv)
    counts = link_subset(read_class_list(args.class_list), args.imagenet, args.out)
    print(f"linked {', '.join(f'{n} {split} classes' for split, n in counts.items())} into {args.out}; "
          f"train with --dataset imagefolder:{args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
