"""CUB-200-2011 -> the CSV table `--dataset csv:PATH` reads: path, class, split and its 312 binary attributes.

    python tools/cub_to_csv.py CUB_200_2011 [--out CUB_200_2011/cub_attributes.csv]

CUB_200_2011 is the extracted archive: images.txt, classes.txt, image_class_labels.txt, train_test_split.txt,
attributes/image_attribute_labels.txt and attributes/attributes.txt (the last one may also sit beside the folder,
as `attributes.txt`, where some copies put it). Paths in the table are relative to CUB_200_2011 (`images/...`),
so train with `--dataset csv:CUB_200_2011/cub_attributes.csv` (the default data root is the table's folder).
An attribute is 1 where the annotator marked it present, at any certainty. The 312 attributes are binary already,
so each is one indicator for `--clusters attributes:K` (combinations of the K highest-entropy ones); CUB's
multi-valued groups (has_bill_shape::curved, has_bill_shape::dagger, ...) are written out as one indicator per
value, as a categorical column would be expanded.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _pairs(path: Path) -> dict[int, str]:
    """`id value` lines -> {id: value} (the value may contain spaces)."""
    result = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, value = line.strip().split(" ", 1)
            result[int(key)] = value.strip()
    return result


def convert(root: Path, out: Path) -> int:
    """Write the table; returns the number of images."""
    attribute_names_file = next((p for p in (root / "attributes" / "attributes.txt", root.parent / "attributes.txt")
                                 if p.is_file()), None)
    required = [root / name for name in ("images.txt", "classes.txt", "image_class_labels.txt",
                                         "train_test_split.txt", "attributes/image_attribute_labels.txt")]
    missing = [str(p) for p in required if not p.is_file()] + ([] if attribute_names_file else
                                                              [str(root / "attributes" / "attributes.txt")])
    if missing:
        raise SystemExit(f"cub_to_csv: not a CUB-200-2011 folder, missing {', '.join(missing)}")
    images = _pairs(root / "images.txt")
    classes = _pairs(root / "classes.txt")
    image_class = {i: classes[int(c)] for i, c in _pairs(root / "image_class_labels.txt").items()}
    is_train = _pairs(root / "train_test_split.txt")
    attribute_names = _pairs(attribute_names_file)
    present = {i: [0] * len(attribute_names) for i in images}
    # Lines are `image attribute is_present certainty time`; a few lines of the official file carry an extra
    # field, so only the first three are read.
    for number, line in enumerate((root / "attributes" / "image_attribute_labels.txt").read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3:
            raise SystemExit(f"cub_to_csv: image_attribute_labels.txt line {number} has {len(fields)} fields")
        image, attribute, is_present = int(fields[0]), int(fields[1]), int(fields[2])
        present[image][attribute - 1] = is_present
    names = [attribute_names[i] for i in sorted(attribute_names)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "split", *names])
        for i in sorted(images):
            split = "train" if is_train[i] == "1" else "test"
            writer.writerow([f"images/{images[i]}", image_class[i], split, *present[i]])
    return len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the extracted CUB_200_2011 folder")
    parser.add_argument("--out", type=Path, help="the CSV to write (default ROOT/cub_attributes.csv)")
    args = parser.parse_args(argv)
    out = args.out or args.root / "cub_attributes.csv"
    count = convert(args.root, out)
    print(f"wrote {out}: {count} images; train with --dataset csv:{out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
