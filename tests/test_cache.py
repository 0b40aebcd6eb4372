"""The decoded cache of file-backed datasets (data/cache.py): what it holds, when it is rebuilt, and that training
from it is the in-memory path with the file pipeline's batches, auxiliary information, augmentation and resume."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from selfsup_clusters.cli import main
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data import cache, load_dataset
from selfsup_clusters.data.augment import BatchAugment, gaussian_blur, rotate_hue
from selfsup_clusters.data.loader import FileBatches, InMemoryBatches, make_batches
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import resume, train
from tests.conftest import interrupted_run, metrics
from tests.test_datasets import fake_table

SIZE = 12
# (width, height): already SIZE, crop only, resized down, resized up, resized by an odd factor
SHAPES = [(SIZE, SIZE), (2 * SIZE, SIZE), (SIZE, 3 * SIZE), (2 * SIZE, 4 * SIZE), (SIZE // 2, SIZE), (18, 30)]
TINY = ["device=cpu", "model.backbone=test_resnet", "model.proj_hidden_dim=32", "model.proj_dim=16", "batch_size=8",
        "epochs=2", "eval.knn_k=5", "log.progress=false", "log.tensorboard=false", "eval.projector=0",
        "eval.cluster_metrics=false", "eval.linear=false", f"data.image_size={SIZE}", "data.num_workers=0"]


def make_folder(root, per_class: int = 6, seed: int = 0):
    """Two classes of PNGs in the shapes above, random pixels."""
    rng = np.random.default_rng(seed)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = SHAPES[i % len(SHAPES)]
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            image.save(root / name / f"{i}.png")
    return root


def folder_config(tmp_path, *extra: str):
    return load_config(overrides=[*TINY, f"data.name=imagefolder:{tmp_path / 'folder'}",
                                  f"data.cache_dir={tmp_path / 'cache'}", *extra])


def by_the_rule(path: str, size: int = SIZE) -> torch.Tensor:
    """The rule written out with plain PIL: short side resized to `size` (bilinear), centre crop."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        short = min(image.size)
        width, height = round(image.width * size / short), round(image.height * size / short)
        resized = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return TF.pil_to_tensor(resized.crop((left, top, left + size, top + size)))


def load(tmp_path, *extra: str):
    return load_dataset(folder_config(tmp_path, *extra).data)


def cache_folder(tmp_path):
    (folder,) = (tmp_path / "cache").iterdir()
    return folder


def test_the_cache_holds_every_image_decoded_by_the_rule_in_dataset_order(tmp_path):
    make_folder(tmp_path / "folder")
    data = load(tmp_path)
    for split in (data.train, data.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, SIZE, SIZE)
        for image, path in zip(split.images, split.paths, strict=True):
            # PIL's box resize rounds its last bit differently from a whole resize and crop: equal within 1
            assert (image.int() - by_the_rule(path).int()).abs().max() <= 1, path
    assert len(data.train) + len(data.test) == 12 and set(data.train.paths).isdisjoint(data.test.paths)
    plain = load_dataset(folder_config(tmp_path, "data.cache=false").data)
    assert plain.train.images is None and plain.train.paths == data.train.paths  # the same samples, in order
    assert torch.equal(plain.train.labels, data.train.labels)


def test_a_jpeg_is_decoded_at_a_reduced_scale_close_to_the_rule(tmp_path):
    y, x = np.mgrid[0:64, 0:96]  # a texture: decoded at too small a scale it blurs away (mean difference 12)
    wave = (127 + 100 * np.sin(2 * np.pi * x / 20) * np.cos(2 * np.pi * y / 28)).astype(np.uint8)
    for name in ("a", "b"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        Image.fromarray(np.stack([wave, 255 - wave, wave // 2 + 60], axis=-1)).save(
            tmp_path / "folder" / name / "0.jpg", quality=95)
    data = load(tmp_path)
    path = data.train.paths[0]
    assert (data.train.images[0].float() - by_the_rule(path).float()).abs().mean() < 3


def test_a_cache_is_read_back_without_decoding_again(tmp_path, monkeypatch):
    make_folder(tmp_path / "folder")
    first = load(tmp_path)
    monkeypatch.setattr(cache, "_build", lambda *args: pytest.fail("rebuilt an up-to-date cache"))
    again = load(tmp_path)
    assert torch.equal(first.train.images, again.train.images) and torch.equal(first.test.images, again.test.images)


def test_a_changed_image_rebuilds_the_cache(tmp_path):
    make_folder(tmp_path / "folder")
    before = load(tmp_path)
    path = before.train.paths[3]
    Image.new("RGB", (SIZE, SIZE), (10, 200, 30)).save(path)
    os.utime(path, ns=(1, 1))  # even a file put back with an old modification time: its size changed
    after = load(tmp_path)
    assert torch.equal(after.train.images[3], by_the_rule(path))
    assert not torch.equal(after.train.images[3], before.train.images[3])
    assert len(list((tmp_path / "cache").iterdir())) == 1  # rebuilt in place, no stale copy left


@pytest.mark.parametrize("damage", ["truncated", "a byte changed", "no manifest (a build that stopped)"])
def test_a_damaged_or_partial_cache_is_rebuilt_never_read(tmp_path, damage):
    make_folder(tmp_path / "folder")
    good = load(tmp_path).train.images.clone()
    folder = cache_folder(tmp_path)
    images = folder / "images.u8"
    if damage == "truncated":
        os.truncate(images, images.stat().st_size - 100)
    elif damage == "a byte changed":
        raw = bytearray(images.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        images.write_bytes(bytes(raw))
    else:
        (folder / "manifest.json").unlink()
    _, info = cache.cache_dataset(load(tmp_path, "data.cache=false"), folder_config(tmp_path).data)
    assert info.built_seconds is not None
    assert torch.equal(load(tmp_path).train.images, good)


def test_a_cache_folder_that_cannot_be_written_or_is_too_small_says_how_to_fix_it(tmp_path, monkeypatch):
    make_folder(tmp_path / "folder")
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(UserError, match="set data.cache_dir=DIR to a writable folder, or data.cache=false"):
        load(tmp_path)
    (tmp_path / "cache").unlink()
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(UserError, match=r"needs 0\.00 GB .* which has 0\.00 GB free; set data.cache_dir=DIR"):
        load(tmp_path)


def test_the_cache_command_builds_ahead_what_training_reads(tmp_path, capsys, monkeypatch):
    make_folder(tmp_path / "folder")
    options = ["--dataset", f"imagefolder:{tmp_path / 'folder'}", f"data.cache_dir={tmp_path / 'cache'}",
               f"data.image_size={SIZE}", "data.num_workers=0"]
    assert main(["cache", *options]) == 0
    assert "12 images (10 train, 2 test) at 12x12 px" in capsys.readouterr().out
    assert main(["cache", *options]) == 0
    assert "up to date" in capsys.readouterr().out
    monkeypatch.setattr(cache, "_build", lambda *args: pytest.fail("training rebuilt the cache built ahead"))
    assert load(tmp_path).train.images is not None
    assert main(["cache", "--dataset", "fashion-mnist"]) == 2
    assert "held in memory already" in capsys.readouterr().err


def test_a_cached_csv_table_yields_the_same_samples_labels_and_attributes(tmp_path):
    table = fake_table(tmp_path, rows=12)
    settings = [*TINY, f"data.name=csv:{table}", f"data.cache_dir={tmp_path / 'cache'}"]
    cached = load_dataset(load_config(overrides=settings).data)
    plain = load_dataset(load_config(overrides=[*settings, "data.cache=false"]).data)
    assert cached.train.images is not None and plain.train.images is None
    for a, b in ((cached.auxiliary, plain.auxiliary), (cached.test, plain.test)):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.attributes, b.attributes)
    assert cached.auxiliary.attribute_names == plain.auxiliary.attribute_names

    cfg = load_config(overrides=settings)
    augment = BatchAugment(cfg.augment, SIZE, cached.mean, cached.std)
    order = torch.tensor([4, 0, 7, 2, 5, 1, 8, 3])
    from_cache = make_batches(cached, augment, torch.device("cpu"))
    from_files = make_batches(plain, augment, torch.device("cpu"))
    assert isinstance(from_cache, InMemoryBatches) and from_cache.decoded_files
    assert isinstance(from_files, FileBatches)
    for (views, index, labels), (file_views, file_index, file_labels) in zip(
            from_cache.train(cached.train, order, 4, torch.Generator().manual_seed(0)),
            from_files.train(plain.train, order, 4, torch.Generator().manual_seed(0)), strict=True):
        assert torch.equal(index, file_index) and torch.equal(labels, file_labels)
        assert len(views) == len(file_views) and views[0].shape == file_views[0].shape == (4, 3, SIZE, SIZE)
    centre = torch.cat(list(from_cache.eval(cached.test, 2)))
    assert centre.shape == (len(cached.test), 3, SIZE, SIZE)


def test_cached_batches_repeat_for_a_seed_and_a_run_from_the_cache_resumes_exactly(tmp_path, monkeypatch):
    make_folder(tmp_path / "folder", per_class=12)
    cfg = folder_config(tmp_path)
    data = load_dataset(cfg.data)
    augment = BatchAugment(cfg.augment, SIZE, data.mean, data.std)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(5))

    def epoch(seed: int):
        batches = make_batches(data, augment, torch.device("cpu"))
        return [views for views, _, _ in batches.train(data.train, order, 4, torch.Generator().manual_seed(seed))]

    one, two, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a, b) for x, y in zip(one, two, strict=True) for a, b in zip(x, y, strict=True))
    assert not torch.equal(one[0][0], other[0][0])

    settings = [*TINY, f"data.name=imagefolder:{tmp_path / 'folder'}", f"data.cache_dir={tmp_path / 'cache'}"]

    def no_rebuild():
        monkeypatch.setattr(cache, "_build", lambda *args: pytest.fail("the resumed run rebuilt the cache"))

    straight, resumed = straight_and_resumed(settings, tmp_path, monkeypatch, before_resuming=no_rebuild)
    for a, b in zip(straight, resumed, strict=True):
        assert a["loss"] == b["loss"] and a["knn_top1"] == b["knn_top1"]


def straight_and_resumed(overrides: list[str], tmp_path, monkeypatch, before_resuming=lambda: None):
    """The metrics of a 2-epoch run trained straight through, and of the same run stopped after its first epoch's
    checkpoint and resumed (which has both epochs logged)."""
    train(load_config(overrides=[*overrides, f"out={tmp_path / 'straight'}"]))
    interrupted_run([*overrides, f"out={tmp_path / 'resumed'}"], monkeypatch)
    before_resuming()
    resume(tmp_path / "resumed")
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [r["epoch"] for r in resumed] == [0, 1]
    return straight, resumed


# --- the file pipeline's augmentation, batched ----------------------------------------------------------------------


def test_batched_blur_matches_torchvision_per_image():
    images = torch.rand(3, 3, 20, 20)
    sigmas = torch.tensor([0.3, 1.0, 2.0])
    blurred = gaussian_blur(images, sigmas, 5)
    for image, sigma, ours in zip(images, sigmas.tolist(), blurred, strict=True):
        assert torch.allclose(ours, TF.gaussian_blur(image, [5, 5], [sigma, sigma]), atol=1e-5)


def test_hue_rotation_keeps_luma_and_gray_and_a_whole_turn_changes_nothing():
    images = torch.rand(4, 3, 6, 6)
    turned = rotate_hue(images, torch.tensor([0.1, -0.3, 0.5, 1.0]))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((turned * luma).sum(1), (images * luma).sum(1), atol=1e-5)
    assert torch.allclose(turned[3], images[3], atol=1e-5) and not torch.allclose(turned[0], images[0], atol=1e-2)
    gray = images[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(rotate_hue(gray, torch.full((4,), 0.25)), gray, atol=1e-5)


def test_decoded_files_get_the_file_pipelines_blur_and_hue(tmp_path):
    cfg = load_config(overrides=["augment.jitter_prob=1", "augment.blur_prob=1", "augment.hue=0.5",
                                 "augment.crop_scale=[1,1]", "augment.crop_ratio=[1,1]", "augment.flip_prob=0",
                                 "augment.brightness=0", "augment.contrast=0", "augment.saturation=0",
                                 "augment.grayscale_prob=0"])
    augment = BatchAugment(cfg.augment, 16, (0.0,) * 3, (1.0,) * 3)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    plain = augment.view(images, torch.Generator().manual_seed(0))
    files = augment.view(images, torch.Generator().manual_seed(0), like_files=True)
    assert torch.allclose(plain, images.float() / 255, atol=1e-5)  # every other step switched off
    assert files.std() < plain.std()  # blurred
