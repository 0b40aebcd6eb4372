"""Where batches come from: the one interface the loop reads images through.

`train(split, order, batch_size, generator, start_step)` yields `(views, index, labels)` for one epoch in the given
sample order from batch `start_step` on (under torchrun `batch_size` is the global batch and each rank yields its
equal slice of every batch); the epoch's randomness is one draw from `generator`, and a batch's augmentation depends
only on that draw and its step, so an epoch stopped after k steps continues with the same batches it would have had;
`eval(split, batch_size)` yields the centre view of every image, in order. Datasets held in memory as one
uint8 tensor (`Split.images` is a tensor) are augmented in whole batches on the training device
(`InMemoryBatches`); so are file-backed ones (image folders, CSV tables) read from their decoded cache
(data/cache.py: `Split.images` memory-mapped beside `Split.paths`), with the per-image pipeline's hue jitter, blur
and centre crop. With `data.cache=false` they are decoded with PIL and augmented per image by torchvision
transforms in DataLoader worker processes (`FileBatches`). `make_batches` picks the implementation for a dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.seeds import derived_seed
from selfsup_clusters.data.augment import BatchAugment, blur_kernel_size
from selfsup_clusters.data.base import ImageDataset, Split

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import AugmentConfig

EVAL_CROP = 0.875  # image files' centre view: the central 87.5% (the usual ImageNet evaluation, eval_transform)


class InMemoryBatches:
    """Whole batches of uint8 images augmented on `device`. `decoded_files`: the images are an image folder's or
    CSV table's decoded cache, augmented and evaluated as `FileBatches` does (hue jitter and blur; the centre crop
    of EVAL_CROP). Images too large for the device stay in host memory (`make_batches`); each batch is then
    gathered there and copied over."""

    def __init__(self, augment: BatchAugment, device: torch.device, decoded_files: bool = False):
        self.augment = augment
        self.device = device
        self.decoded_files = decoded_files

    def train(self, split: Split, order: torch.Tensor, batch_size: int, generator: torch.Generator,
              start_step: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
        labels = split.labels.to(self.device)  # on the device, so a step never waits for the host
        part = (distributed.rank(), distributed.world_size())
        seed = epoch_seed(generator)
        order, batch_size = rank_order(order, batch_size), batch_size // part[1]
        for step in range(start_step, len(order) // batch_size):
            index = order[step * batch_size : (step + 1) * batch_size]
            images = split.images[index.to(split.images.device)].to(self.device)  # no-ops when held on the device
            step_generator = torch.Generator(device=generator.device).manual_seed(derived_seed(seed, step))
            yield (self.augment.views(images, step_generator, part, like_files=self.decoded_files), index,
                   labels[index])

    def eval(self, split: Split, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(split), batch_size):
            images = split.images[start : start + batch_size]
            if self.decoded_files:
                side = images.shape[-1]
                crop = round(side * EVAL_CROP)
                offset = (side - crop) // 2
                images = images[..., offset : offset + crop, offset : offset + crop]
            yield self.augment.center(images.to(self.device))


def epoch_seed(generator: torch.Generator) -> int:
    """The one draw an epoch's augmentation takes from its generator."""
    return int(torch.randint(2**31, (1,), generator=generator, device=generator.device))  # x stride < 2**63


def rank_order(order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's samples of an epoch: its equal slice of every whole global batch of `order`, in order (what a
    DistributedSampler with per-epoch seeding gives, batch by batch); `order` itself (whole batches) on one process.
    """
    rank, parts = distributed.rank(), distributed.world_size()
    steps = len(order) // batch_size
    return order[: steps * batch_size].view(steps, parts, batch_size // parts)[:, rank].reshape(-1)


class ImageReadError(UserError):
    """An image file that cannot be decoded. Raised in a DataLoader worker, it reaches the main process as
    `ImageReadError(worker traceback + message)`, so it keeps only its own message, the traceback's last line."""

    def __init__(self, message: str):
        super().__init__(message.strip().splitlines()[-1].rpartition("ImageReadError: ")[2])


def read_image(path: str, size: int | None = None) -> torch.Tensor:
    """(3, H, W) uint8 RGB; with `size`, the decoded cache's rule (data/cache.py): (3, size, size), the short side
    resized to `size` and the centre square kept, JPEGs decoded at a reduced DCT scale that keeps both sides >= size.
    """
    try:
        with Image.open(path) as image:
            if size is None:
                return v2.functional.pil_to_tensor(image.convert("RGB"))
            image.draft("RGB", (size, size))
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
            return v2.functional.pil_to_tensor(fitted)
    except Exception as e:  # PIL raises many types: SyntaxError for a broken PNG, DecompressionBombError, ...
        raise ImageReadError(unreadable_message(path, e)) from None


def unreadable_message(path: str, error: BaseException) -> str:
    """One line: the file, PIL's reason and what to do."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, Image.DecompressionBombError):
        reason = f"{reason[:120]}... (PIL refuses it as a decompression bomb)"
    return (f"cannot read image {path}: {reason}; replace or remove the file, or set data.skip_unreadable=true to "
            "train without it")


def train_transform(cfg: AugmentConfig, image_size: int, mean: list[float], std: list[float]) -> v2.Compose:
    """One view, per image: SimCLR/MoCo v2's augmentation (crop, flip, colour jitter, grayscale, blur)."""
    blur_kernel = blur_kernel_size(image_size)
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio), antialias=True),
        v2.RandomHorizontalFlip(cfg.flip_prob),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_prob),
        v2.RandomGrayscale(cfg.grayscale_prob),
        v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=cfg.blur_prob),
        v2.Normalize(mean, std),
    ])


def eval_transform(image_size: int, mean: list[float], std: list[float]) -> v2.Compose:
    """The centre view: resize the short side to size/0.875, centre crop (the usual ImageNet evaluation)."""
    return v2.Compose([
        v2.Resize(round(image_size / EVAL_CROP), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


class _ImageFiles(Dataset):
    """Sample i of a file-backed split: `views` augmented views (training) or the centre view (evaluation)."""

    def __init__(self, split: Split, transform: Callable, views: int = 0, seed: int = 0):
        self.paths, self.labels = split.paths, split.labels
        self.transform, self.views, self.seed = transform, views, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = read_image(self.paths[i])
        if not self.views:
            return self.transform(image)
        # Seeded by (epoch, sample), not by the worker: the views do not depend on num_workers, and resume is exact.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + i)
            return [self.transform(image) for _ in range(self.views)], i, self.labels[i]


class FileBatches:
    def __init__(self, augment: BatchAugment, device: torch.device, num_workers: int):
        mean, std = augment.mean.flatten().tolist(), augment.std.flatten().tolist()
        self.train_transform = train_transform(augment.cfg, augment.image_size, mean, std)
        self.eval_transform = eval_transform(augment.image_size, mean, std)
        self.views = augment.cfg.views
        self.device = device
        self.num_workers = num_workers

    def _loader(self, dataset: Dataset, batch_size: int, order: list[int] | None = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=self.num_workers,
                          pin_memory=self.device.type == "cuda", drop_last=order is not None)

    def train(self, split: Split, order: torch.Tensor, batch_size: int, generator: torch.Generator,
              start_step: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
        dataset = _ImageFiles(split, self.train_transform, self.views, epoch_seed(generator))
        order, batch_size = rank_order(order, batch_size), batch_size // distributed.world_size()
        order = order[start_step * batch_size : len(order) // batch_size * batch_size]
        for views, index, labels in read_batches(self._loader(dataset, batch_size, order.tolist())):
            yield ([v.to(self.device, non_blocking=True) for v in views], index.to(self.device),
                   labels.to(self.device))

    def eval(self, split: Split, batch_size: int) -> Iterator[torch.Tensor]:
        for images in read_batches(self._loader(_ImageFiles(split, self.eval_transform), batch_size)):
            yield images.to(self.device, non_blocking=True)


def read_batches(loader: DataLoader) -> Iterator:
    """The loader's batches; its workers stop at the end, after an error or when the reader stops early. Left to
    the garbage collector, the workers of an abandoned epoch were seen to hold the next DataLoader up for 5 s."""
    batches = iter(loader)
    try:
        yield from batches
    finally:
        if hasattr(batches, "_shutdown_workers"):  # the multi-process iterator (num_workers > 0)
            batches._shutdown_workers()


Batches = InMemoryBatches | FileBatches


def make_batches(data: ImageDataset, augment: BatchAugment, device: torch.device, num_workers: int = 0) -> Batches:
    """File-backed datasets without a cache decode in `num_workers` DataLoader processes; in-memory and cached ones
    move to the device when they take at most half of its free memory (else they stay in host memory)."""
    if data.train.images is None:
        return FileBatches(augment, device, num_workers)
    images = data.train.images
    if device.type == "cuda" and images.device != device and images.nbytes > torch.cuda.mem_get_info(device)[0] / 2:
        print(f"{images.nbytes / 1e9:.1f} GB of training images stay in host memory (more than half of the free "
              f"memory of {device}); each batch is copied over", flush=True)
    else:
        data.train.images = images.to(device)
    return InMemoryBatches(augment, device, decoded_files=data.train.paths is not None)
