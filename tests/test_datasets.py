"""CIFAR-10/100, STL-10, image folders and CSV tables: loading, labels, wnids, attributes, superclasses, error
messages, the converters in tools/, and a 1-epoch run on each, all on tiny copies made here."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_clusters.cli import main
from selfsup_clusters.clusters import build_cluster_source, rank_attributes, statistics_table
from selfsup_clusters.config import CONFIG_DIR, DataConfig
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data import load_dataset
from selfsup_clusters.data.augment import BatchAugment
from selfsup_clusters.data.loader import FileBatches, make_batches
from selfsup_clusters.recipes import UserConfig, load_config
from selfsup_clusters.training.trainer import train
from tests.conftest import needs_fashion_mnist
from tools.cub_to_csv import convert as cub_to_csv
from tools.imagenet_subset import link_subset, read_class_list

# Three WordNet 3.0 synsets that Debian's data.noun holds: jersey/T-shirt, trouser, bag.
WNIDS = ["n03595614", "n04489008", "n02773037"]
TINY = ["model.backbone=test_resnet", "model.stem=timm", "model.proj_hidden_dim=32", "model.proj_dim=16",
        "batch_size=8", "epochs=1", "eval.knn_k=5", "log.progress=false", "log.tensorboard=false", "data.image_size=32",
        "data.num_workers=0"]
RNG = np.random.default_rng(0)


def data_config(**kwargs) -> DataConfig:
    return load_config(overrides=[f"data.{k}={'null' if v is None else v}" for k, v in kwargs.items()]).data


def run_cli(capsys, *args) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def dump(obj, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def fake_cifar10(root, per_batch: int = 4, test: int = 6):
    folder = root / "cifar-10-batches-py"
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": test}
    for name, n in batches.items():
        dump({"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": (np.arange(n) % 10).tolist()},
             folder / name)
    dump({"label_names": [f"class{i}" for i in range(10)]}, folder / "batches.meta")
    return folder


def fake_cifar100(root, train: int = 24, test: int = 12):
    """6 fine classes in 3 superclasses (fine c -> coarse c // 2)."""
    folder = root / "cifar-100-python"
    for name, n in (("train", train), ("test", test)):
        fine = np.arange(n) % 6
        dump({"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
              "coarse_labels": (fine // 2).tolist()}, folder / name)
    dump({"fine_label_names": ["apple", "pear", "bee", "moth", "bus", "tram"],
          "coarse_label_names": ["fruit", "insects", "vehicles"]}, folder / "meta")
    return folder


def fake_stl10(root, train: int = 8, test: int = 8, unlabeled: int = 12) -> dict[str, np.ndarray]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    images = {}
    for split, n in (("train", train), ("test", test), ("unlabeled", unlabeled)):
        images[split] = RNG.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        images[split].transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # the format is column-major
        if split != "unlabeled":
            (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                      "monkey", "ship", "truck"]))
    return images


def png(path, size=(40, 30)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def fake_tree(root, classes, per_class: int):
    for name in classes:
        for i in range(per_class):
            png(root / name / f"{i}.png")
    return root


def fake_table(root, rows: int = 30, split: bool = True, extra: str = "") -> tuple:
    """A CSV of `rows` PNGs: class (3 values), split, and attributes colour (3 values, the highest entropy),
    size (2 values) and a constant column."""
    lines = ["path,class,split,size,colour,constant" if split else "path,class,size,colour,constant"]
    for i in range(rows):
        png(root / "img" / f"{i}.png")
        row = [f"img/{i}.png", ["boot", "sandal", "shoe"][i % 3]] + (["test" if i % 5 == 0 else "train"] * split)
        lines.append(",".join(row + [str(i % 2), ["red", "green", "blue"][i // 2 % 3], "x"]))
    table = root / "table.csv"
    table.write_text("\n".join(lines) + "\n" + extra)
    return table


# --- CIFAR ---------------------------------------------------------------------------------------------------------


def test_cifar10_reads_the_pickles(tmp_path):
    folder = fake_cifar10(tmp_path)
    data = load_dataset(data_config(name="cifar10", root=tmp_path))
    assert len(data.train) == 20 and len(data.test) == 6 and data.channels == 3 and data.image_size == 32
    assert data.class_names[3] == "class3" and data.superclasses is None
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    assert torch.equal(data.train.images[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert data.train.labels.tolist()[:4] == first["labels"]


def test_cifar100_superclasses_come_from_the_coarse_labels(tmp_path, capsys):
    fake_cifar100(tmp_path)
    data = load_dataset(data_config(name="cifar100", root=tmp_path / "cifar-100-python"))  # the folder itself works
    assert data.class_names[:2] == ["apple", "pear"] and data.superclasses == [0, 0, 1, 1, 2, 2]
    assert data.superclass_names == ["fruit", "insects", "vehicles"]
    source = build_cluster_source("superclass", data.auxiliary)
    assignments = source.assign(None)
    assert torch.equal(assignments.ids[0], data.train.labels // 2) and assignments.names[0] == data.superclass_names

    status, out, _ = run_cli(capsys, "clusters", "--dataset", "cifar100", "--data-root", str(tmp_path))
    row = next(line.split() for line in out.splitlines() if line.startswith("superclass"))
    assert status == 0 and row[1:4] == ["3", "8", "8"] and row[5] == "0.000"  # 3 clusters of 8, H(Z|T) = 0


def test_analyze_includes_the_superclass_level(tmp_path):
    from selfsup_clusters.studies.analyze import cluster_levels

    fake_cifar100(tmp_path)
    user = UserConfig(overrides=("data.name=cifar100", f"data.root={tmp_path}"))
    specs = [spec for spec, _ in cluster_levels(user, [])]
    assert specs[:2] == ["labels", "superclass"]


def test_superclass_on_a_dataset_without_superclasses_says_so(tmp_path, capsys):
    fake_cifar10(tmp_path)
    status, _, err = run_cli(capsys, "train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--method",
                             "cl-infonce", "--clusters", "superclass", "--out", str(tmp_path / "run"), *TINY)
    assert status == 2 and "'superclass' needs a dataset whose classes have superclasses" in err


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_missing_dataset_says_where_the_files_must_be(tmp_path, capsys, name):
    status, _, err = run_cli(capsys, "train", "--dataset", name, "--data-root", str(tmp_path), "--out",
                             str(tmp_path / "run"), *TINY)
    assert status == 2 and str(tmp_path) in err and "--download" in err and "--data-root" in err


def test_a_damaged_cifar_batch_is_named(tmp_path):
    folder = fake_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR batch"):
        load_dataset(data_config(name="cifar10", root=tmp_path))


# --- STL-10 --------------------------------------------------------------------------------------------------------


def test_stl10_trains_on_the_unlabeled_images_too(tmp_path):
    images = fake_stl10(tmp_path)
    data = load_dataset(data_config(name="stl10", root=tmp_path))
    assert len(data.train) == 20 and len(data.test) == 8 and data.class_names[0] == "airplane"
    assert data.train.labels[:8].tolist() == list(range(8)) and (data.train.labels[8:] == -1).all()
    assert torch.equal(data.train.images[:8], torch.from_numpy(images["train"]))
    assert torch.equal(data.train.images[8:], torch.from_numpy(images["unlabeled"]))
    labelled = load_dataset(data_config(name="stl10", root=tmp_path / "stl10_binary", unlabeled=False))
    assert len(labelled.train) == 8


def test_stl10_without_its_unlabeled_file_suggests_the_option(tmp_path):
    fake_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    with pytest.raises(UserError, match="unlabeled_X.bin.*data.unlabeled=false"):
        load_dataset(data_config(name="stl10", root=tmp_path))


# --- image folders -------------------------------------------------------------------------------------------------


def test_image_folder_of_wnids_gives_wordnet_clusters(tmp_path):
    fake_tree(tmp_path / "in" / "train", WNIDS, 4)
    fake_tree(tmp_path / "in" / "val", WNIDS[:2], 2)
    data = load_dataset(data_config(name=f"imagefolder:{tmp_path / 'in'}", cache="false"))  # the files themselves
    assert data.class_names == sorted(WNIDS) and data.train.images is None and data.channels == 3
    assert len(data.train) == 12 and len(data.test) == 4
    assert sorted(data.train.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(f"/{data.class_names[y]}/" in p for p, y in zip(data.train.paths, data.train.labels.tolist(),
                                                               strict=True))
    assert data.train.labels[:6].unique().numel() > 1  # shuffled once, so --subset mixes the classes
    rows = statistics_table(data.auxiliary)
    levels = {row["clusters"]: row["num_clusters"] for row in rows}
    assert levels["wordnet:5"] == 1 and levels["wordnet:7"] == 2 and levels["wordnet:9"] == 3  # clothing, container
    sub = load_dataset(data_config(name="imagefolder", root=tmp_path / "in", subset=5))  # --data-root form
    assert len(sub.train) == 5 and sub.train.paths == data.train.paths[:5]


def test_image_folder_names_map_to_wnids_by_a_csv(tmp_path):
    fake_tree(tmp_path / "clothes", ["bag", "shirt", "trousers"], 5)
    (tmp_path / "map.csv").write_text("class,wnid\nshirt,n03595614\ntrousers,n04489008\nbag,n02773037\n")
    data = load_dataset(data_config(name="imagefolder:clothes", root=tmp_path, wnid_map=tmp_path / "map.csv"))
    assert data.wnids == ["n02773037", "n03595614", "n04489008"]
    assert len(data.train) == 12 and len(data.test) == 3  # a seeded 80/20 split of one tree
    again = load_dataset(data_config(name=f"imagefolder:{tmp_path / 'clothes'}", wnid_map=tmp_path / "map.csv"))
    assert again.test.paths == data.test.paths

    (tmp_path / "map.csv").write_text("class,wnid\nshirt,n03595614\n")
    with pytest.raises(UserError, match=r"no wnid for 2 classes \(e.g. \['bag', 'trousers'\]\)"):
        load_dataset(data_config(name=f"imagefolder:{tmp_path / 'clothes'}", wnid_map=tmp_path / "map.csv"))
    (tmp_path / "map.csv").write_text("class,wnid\nshirt,03595614\n")
    with pytest.raises(UserError, match="row 2: '03595614' is not a wnid"):
        load_dataset(data_config(name=f"imagefolder:{tmp_path / 'clothes'}", wnid_map=tmp_path / "map.csv"))


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="image folder .*nowhere not found: it must hold one folder of images per"):
        load_dataset(data_config(name=f"imagefolder:{tmp_path / 'nowhere'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="Couldn't find any class folder"):
        load_dataset(data_config(name=f"imagefolder:{tmp_path / 'empty'}"))
    with pytest.raises(UserError, match="imagefolder needs a location"):
        load_dataset(data_config(name="imagefolder"))
    with pytest.raises(UserError, match="dataset cifar10 takes no path"):
        load_dataset(data_config(name="cifar10:somewhere"))
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; choose one of: .*csv:PATH.*imagefolder:PATH"):
        load_dataset(data_config(name="imagenet"))


# --- CSV tables ----------------------------------------------------------------------------------------------------


def test_csv_table_classes_split_and_attribute_clusters(tmp_path):
    fake_table(tmp_path)
    data = load_dataset(data_config(name=f"csv:{tmp_path / 'table.csv'}"))
    # A categorical column is one binary indicator per value; a 0/1 column stays one.
    assert data.class_names == ["boot", "sandal", "shoe"] and data.attribute_names == [
        "size", "colour=blue", "colour=green", "colour=red", "constant=x"]
    assert set(data.train.attributes.unique().tolist()) == {0, 1}
    assert (data.train.attributes[:, 1:4].sum(dim=1) == 1).all()
    assert len(data.train) == 24 and len(data.test) == 6
    assert data.test.paths[0].endswith("img/0.png") and data.test.labels[0] == 0
    # Entropy ranking of indicators: size (p = 1/2) > each colour (p = 1/3) > the constant column.
    assert rank_attributes(data.train.attributes) == [0, 1, 2, 3, 4]
    ids = [build_cluster_source(f"attributes:{k}", data.auxiliary).assign(None).ids[0] for k in range(1, 6)]
    assert [int(i.max()) + 1 for i in ids] == [2, 4, 6, 6, 6]
    for coarse, fine in zip(ids, ids[1:], strict=False):  # nested: each cluster at K lies in one cluster at K - 1
        assert all(coarse[fine == c].unique().numel() == 1 for c in fine.unique())


def test_csv_table_without_a_split_column_gets_a_seeded_80_20_split(tmp_path):
    fake_table(tmp_path, rows=10, split=False)
    cfg = data_config(name="csv:table.csv", root=tmp_path)  # PATH relative to --data-root
    first, second = load_dataset(cfg), load_dataset(cfg)
    assert len(first.train) == 8 and len(first.test) == 2 and first.test.paths == second.test.paths


def test_csv_table_column_options(tmp_path):
    table = tmp_path / "t.csv"
    png(tmp_path / "a.png"), png(tmp_path / "b.png")
    table.write_text("file,shoe,heel\na.png,boot,high\nb.png,sandal,flat\n")
    data = load_dataset(data_config(name=f"csv:{table}", **{"csv.path_column": "file", "csv.class_column": "shoe"}))
    assert data.class_names == ["boot", "sandal"] and data.attribute_names == ["heel=high"]
    picked = load_dataset(data_config(name=f"csv:{table}", **{
        "csv.path_column": "file", "csv.class_column": "null", "csv.attribute_columns": "[shoe,heel]"}))
    assert picked.class_names == [] and picked.attribute_names == ["shoe=sandal", "heel=high"]
    assert (picked.train.labels == -1).all() and (picked.test.labels == -1).all()


@pytest.mark.parametrize(("extra", "options", "message"), [
    ("", {"csv.path_column": "file"}, r"has no column 'file' \(its columns: path, class, split, size, colour, "
                                      r"constant\); name the right one with data.csv.path_column=COLUMN"),
    ("", {"csv.class_column": "label"}, "no column 'label'.*or data.csv.class_column=null for a dataset without"),
    ("", {"csv.attribute_columns": "[heel]"}, "no column 'heel'.*data.csv.attribute_columns"),
    ("img/99.png,boot,train,0,red,x\n", {}, "row 32: image 'img/99.png' not found under"),
    ("img/1.png,,train,0,red,x\n", {}, "row 32: empty 'class'"),
    ("img/1.png,boot,validation,0,red,x\n", {}, "row 32: split is 'validation'; use train or test"),
    ("img/1.png,boot\n", {}, "row 32 does not have the header's 6 fields"),
])
def test_csv_table_errors_name_the_column_or_row(tmp_path, extra, options, message):
    table = fake_table(tmp_path, extra=extra)
    with pytest.raises(UserError, match=message):
        load_dataset(data_config(name=f"csv:{table}", **options))


def test_csv_table_that_is_missing(tmp_path, capsys):
    status, _, err = run_cli(capsys, "clusters", "--dataset", f"csv:{tmp_path / 'none.csv'}")
    assert status == 2 and "none.csv not found; --dataset csv:PATH needs a table with columns path,class," in err


def test_an_unreadable_image_names_its_file_even_from_a_worker(tmp_path, capsys):
    table = fake_table(tmp_path)
    (tmp_path / "img" / "7.png").write_bytes(b"not a png")
    status, _, err = run_cli(capsys, "train", "--dataset", f"csv:{table}", "--out", str(tmp_path / "run"), *TINY,
                             "data.num_workers=1")
    assert status == 2 and err.count("\n") == 1
    assert f"cannot read image {tmp_path / 'img' / '7.png'}: cannot identify image file" in err


# --- the file-backed pipeline --------------------------------------------------------------------------------------


def test_file_batches_follow_the_order_and_do_not_depend_on_the_workers(tmp_path):
    fake_table(tmp_path, rows=10)
    cfg = load_config(overrides=[f"data.name=csv:{tmp_path / 'table.csv'}", "data.image_size=24", "data.cache=false"])
    data = load_dataset(cfg.data)
    augment = BatchAugment(cfg.augment, cfg.data.image_size, data.mean, data.std)
    order = torch.tensor([5, 1, 7, 0, 3, 2, 6])

    def epoch(workers: int):
        batches = make_batches(data, augment, torch.device("cpu"), workers)
        return list(batches.train(data.train, order, 3, torch.Generator().manual_seed(1)))

    one, two = epoch(0), epoch(2)
    assert isinstance(make_batches(data, augment, torch.device("cpu")), FileBatches)
    assert [b[1].tolist() for b in one] == [[5, 1, 7], [0, 3, 2]]  # the given order, whole batches only
    assert torch.equal(one[0][2], data.train.labels[torch.tensor([5, 1, 7])])
    assert one[0][0][0].shape == (3, 3, 24, 24) and not torch.equal(one[0][0][0], one[0][0][1])  # two views differ
    for a, b in zip(one, two, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    centre = torch.cat(list(make_batches(data, augment, torch.device("cpu")).eval(data.test, 4)))
    assert centre.shape == (len(data.test), 3, 24, 24)


# --- 1-epoch training runs -----------------------------------------------------------------------------------------


def run_one_epoch(tmp_path, *overrides, config: str | None = None) -> dict:
    """One epoch with a tiny model; `config` names the dataset's own file in configs/."""
    path = CONFIG_DIR / f"{config}.yaml" if config else None
    return train(load_config(path, overrides=[*TINY, f"out={tmp_path / 'run'}", *overrides]))


def test_one_epoch_on_cifar10(tmp_path):
    fake_cifar10(tmp_path)
    final = run_one_epoch(tmp_path, f"data.root={tmp_path}", config="cifar10")
    assert 0 <= final["knn_top1"] <= 1 and final["loss"] > 0


def test_one_epoch_on_cifar100_with_superclass_clusters(tmp_path):
    fake_cifar100(tmp_path)
    final = run_one_epoch(tmp_path, f"data.root={tmp_path}", config="cifar100_superclasses")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["clusters"][0]["name"] == "superclass" and record["clusters"][0]["num_clusters"] == 3
    assert 0 <= final["knn_top1"] <= 1


def test_one_epoch_on_stl10_with_its_unlabeled_images(tmp_path):
    fake_stl10(tmp_path)
    final = run_one_epoch(tmp_path, f"data.root={tmp_path}", "method=cl-infonce", "clusters.spec=labels",
                          config="stl10")
    assert 0 <= final["knn_top1"] <= 1 and 0 <= final["linear_top1"] <= 1


def test_one_epoch_on_an_image_folder_with_wordnet_clusters(tmp_path):
    fake_tree(tmp_path / "in" / "train", WNIDS, 6)
    fake_tree(tmp_path / "in" / "val", WNIDS, 2)
    final = run_one_epoch(tmp_path, f"data.name=imagefolder:{tmp_path / 'in'}", "clusters.spec=wordnet:7",
                          "log.tensorboard=true", "eval.projector=6", "eval.batch_size=4", config="imagenet100_wordnet")
    assert 0 <= final["knn_top1"] <= 1
    assert any((tmp_path / "run").glob("**/projector_config.pbtxt"))  # the projector works without thumbnails


def test_one_epoch_on_a_csv_table_with_attribute_clusters(tmp_path):
    fake_table(tmp_path)
    final = run_one_epoch(tmp_path, f"data.name=csv:{tmp_path / 'table.csv'}", "data.num_workers=2",
                          "clusters.spec=attributes:3", config="ut_zappos_attributes")  # the table has 5 indicators
    assert 0 <= final["knn_top1"] <= 1


def test_one_epoch_without_labels_turns_evaluation_off_once(tmp_path, capsys):
    fake_table(tmp_path)
    final = run_one_epoch(tmp_path, f"data.name=csv:{tmp_path / 'table.csv'}", "data.csv.class_column=null",
                          "epochs=2", "method=cl-infonce", "clusters.spec=attributes:1")
    out = capsys.readouterr().out
    assert out.count("has no labels: kNN and linear evaluation are off") == 1
    assert "knn_top1" not in final and final["loss"] > 0


# --- converters in tools/ ------------------------------------------------------------------------------------------


def test_cub_to_csv_makes_a_table_the_csv_dataset_reads(tmp_path):
    cub = tmp_path / "CUB_200_2011"
    images = [f"00{c}.Bird_{c}/img_{i}.jpg" for c in (1, 2) for i in range(3)]
    for path in images:
        png(cub / "images" / path)
    (cub / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(images, 1)))
    (cub / "classes.txt").write_text("1 001.Bird_1\n2 002.Bird_2\n")
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {1 + (i > 3)}\n" for i in range(1, 7)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {int(i % 3 != 0)}\n" for i in range(1, 7)))
    (cub / "attributes").mkdir()
    (cub / "attributes" / "attributes.txt").write_text("1 has_bill_shape::curved\n2 has_wing_color::blue\n")
    lines = [f"{i} {a} {int((i + a) % 2)} 3 1.5" for i in range(1, 7) for a in (1, 2)]
    lines[3] += " 0"  # the official file has a few lines with an extra field
    (cub / "attributes" / "image_attribute_labels.txt").write_text("\n".join(lines) + "\n")

    assert cub_to_csv(cub, cub / "cub.csv") == 6
    assert (cub / "cub.csv").read_text().splitlines()[:2] == [
        "path,class,split,has_bill_shape::curved,has_wing_color::blue",
        "images/001.Bird_1/img_0.jpg,001.Bird_1,train,0,1"]
    data = load_dataset(data_config(name=f"csv:{cub / 'cub.csv'}"))
    assert data.class_names == ["001.Bird_1", "002.Bird_2"] and len(data.train) == 4 and len(data.test) == 2
    assert data.attribute_names == ["has_bill_shape::curved", "has_wing_color::blue"]
    (cub / "classes.txt").unlink()
    with pytest.raises(SystemExit, match="not a CUB-200-2011 folder, missing .*classes.txt"):
        cub_to_csv(cub, cub / "cub.csv")


def test_imagenet_subset_links_the_listed_classes(tmp_path):
    imagenet = tmp_path / "imagenet"
    for split in ("train", "val"):
        fake_tree(imagenet / split, [*WNIDS, "n01440764"], 2)
    (tmp_path / "classes.txt").write_text(f"# ImageNet-3\n{WNIDS[0]} jersey\n\n{WNIDS[1]}\n{WNIDS[2]}\n")
    wnids = read_class_list(tmp_path / "classes.txt")
    assert link_subset(wnids, imagenet, tmp_path / "in3") == {"train": 3, "val": 3}
    assert (tmp_path / "in3" / "train" / WNIDS[0]).is_symlink()
    data = load_dataset(data_config(name=f"imagefolder:{tmp_path / 'in3'}"))
    assert data.class_names == sorted(WNIDS) and len(data.train) == 6 and len(data.test) == 6
    (tmp_path / "bad.txt").write_text("dog\n")
    with pytest.raises(SystemExit, match="line 1: 'dog' is not a wnid"):
        read_class_list(tmp_path / "bad.txt")
    with pytest.raises(SystemExit, match=r"lacks 2 class folders \(e.g. \['train/n09999999', 'val/n09999999'\]\)"):
        link_subset(["n09999999"], imagenet, tmp_path / "x")


@needs_fashion_mnist
def test_the_validation_split_is_held_out_once_by_load_dataset_for_every_command(tmp_path, capsys):
    from selfsup_clusters.training import run as run_module

    cfg = load_config(overrides=["data.subset=1000", "data.val_fraction=0.2", "device=cpu",
                                 "model.backbone=test_resnet", "eval.cluster_metrics=false", f"out={tmp_path / 'run'}"])
    data = load_dataset(cfg.data)
    whole = load_dataset(load_config(overrides=["data.subset=1000"]).data)
    held = whole.holdout(0.2)  # 20% of each class of the first 1,000 images: 801 + 199
    assert (len(data.train), len(data.test)) == (len(held.train), len(held.test)) == (801, 199)
    assert torch.equal(data.test.images, held.test.images)
    run = run_module.setup(cfg)
    assert (len(run.data.train), len(run.data.test)) == (801, 199)  # training holds out no second time
    # `clusters` counts the training images only, as analyze and claim C4 do
    assert main(["clusters", "--subset", "1000", "data.val_fraction=0.2"]) == 0
    assert "fashion-mnist: 801 training images" in capsys.readouterr().out


# --- folders that cannot loop or leak ------------------------------------------------------------------------------


def test_a_symlink_cycle_is_read_once_and_no_file_lands_on_both_sides(tmp_path, capsys):
    """The new user's tree: two classes of 30 noise images, one class holding a link back to the root. Followed
    blindly, the cycle gave 2,460 images and copies of the same files in train and test (kNN 0.990 on noise)."""
    import os

    root = fake_tree(tmp_path / "tree", ["a", "b"], 30)
    os.symlink(root, root / "b" / "loop")
    os.symlink(root / "a" / "0.png", root / "b" / "also-a0.png")  # one file reached through two classes
    data = load_dataset(data_config(name=f"imagefolder:{root}"))
    out = capsys.readouterr().out
    assert len(data.train) + len(data.test) == 60
    assert "skipped 1 folder(s) reached a second time through a symbolic link" in out
    assert "1 image file(s) reached a second time" in out
    train, test = ({os.path.realpath(p) for p in split.paths} for split in (data.train, data.test))
    assert not train & test


def test_a_test_file_linked_into_the_training_tree_never_trains(tmp_path, capsys):
    import os

    root = tmp_path / "tree"
    fake_tree(root / "train", ["a", "b"], 4)
    fake_tree(root / "val", ["a", "b"], 2)
    os.symlink(root / "val" / "a" / "0.png", root / "train" / "a" / "from-val.png")
    data = load_dataset(data_config(name=f"imagefolder:{root}"))
    assert len(data.train) == 8 and len(data.test) == 4
    assert "1 training image file(s) are also test images" in capsys.readouterr().out


def test_csv_rows_naming_one_file_twice_are_one_image_and_a_test_one(tmp_path, capsys):
    # img/1.png is a train row; it is named again by a test row, and img/2.png twice as train
    table = fake_table(tmp_path, extra="img/1.png,boot,test,1,red,x\nimg/2.png,shoe,train,0,red,x\n")
    data = load_dataset(data_config(name=f"csv:{table}"))
    assert "2 row(s) name an image file an earlier row names" in capsys.readouterr().out
    assert len(data.train) + len(data.test) == 30
    assert any(p.endswith("img/1.png") for p in data.test.paths)
    assert not any(p.endswith("img/1.png") for p in data.train.paths)
