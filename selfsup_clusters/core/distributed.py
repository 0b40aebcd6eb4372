"""torch.distributed helpers for runs launched with PyTorch's `torchrun` (one process per device).

`torchrun --nproc-per-node N -m selfsup_clusters train ...` starts N processes and sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init()` joins them into one process group (gloo on CPU; on GPU nccl for
CUDA tensors and gloo for CPU ones). With one process and no torchrun variables nothing is initialised and every
helper returns its input unchanged, so the single-process path stays exactly as it was and costs nothing.

Conventions the trainer relies on: `batch_size` is the global batch and every rank trains on an equal 1/world_size
slice of it; rank 0 evaluates, logs and writes checkpoints.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup_clusters.core.errors import UserError

_created_here = False  # init() made the process group, so cleanup() may destroy it


def init() -> None:
    """Join torchrun's process group when WORLD_SIZE > 1 (reading the env:// variables torchrun sets)."""
    global _created_here
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank < torch.cuda.device_count():  # one GPU per process; device="cuda" then means this one
            torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    _created_here = True
    if dist.get_rank() != 0:  # warnings once per run, from rank 0, not once per rank
        logging.getLogger("selfsup_clusters").setLevel(logging.ERROR)


def cleanup() -> None:
    global _created_here
    if _created_here and dist.is_initialized():
        dist.destroy_process_group()
    _created_here = False


def enabled() -> bool:
    """More than one process is training together."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def rank() -> int:
    # torchrun's RANK once the group is gone, so the command line's last words still come from rank 0 only
    return dist.get_rank() if enabled() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if enabled():
        dist.barrier()


def all_gather(x: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
    """(n, ...) on every rank -> (world_size * n, ...): every rank's rows, in rank order (equal n on all ranks).

    with_grad: the gradient of the result flows back to each rank's own `x`, summed over the ranks (each rank's
    loss may use every rank's rows); otherwise the result is detached.
    """
    if not enabled():
        return x
    if with_grad:
        return _GatherWithGrad.apply(x)
    return _gather(x.detach())


def _gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()  # a fresh tensor may be reduced in place
        dist.all_reduce(grad)  # every rank's gradient for every row, summed; then our rows
        n = grad.shape[0] // world_size()
        return grad[rank() * n : (rank() + 1) * n]


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over the ranks; the gradient of each rank's input is the sum of every rank's output gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over the ranks, in place (every rank gets the same values); `x` itself with one process."""
    if enabled():
        dist.all_reduce(x)
    return x


def all_gather_uneven(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's (n_r, ...) rows, in rank order, where n_r may differ between ranks; [x] with one process."""
    if not enabled():
        return [x]
    sizes = _gather(torch.tensor([x.shape[0]], device=x.device)).tolist()
    most = max(sizes)
    if most == 0:
        return [x[:0] for _ in sizes]
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = _gather(padded).view(len(sizes), most, *x.shape[1:])
    return [parts[r, :n] for r, n in enumerate(sizes)]


def gather_uneven_to_main(x: torch.Tensor) -> list[torch.Tensor] | None:
    """Every rank's (n_r, ...) CPU rows on rank 0 only (a list in rank order), None on the others; [x] with one
    process. Unlike `all_gather_uneven` no other rank holds every rank's rows (a checkpoint's whole memory bank)."""
    if not enabled():
        return [x]
    x = x.detach().cpu().contiguous()
    sizes = [int(n) for n in _gather(torch.tensor([x.shape[0]]))]
    most = max(sizes)
    padded = x.new_zeros((max(most, 1), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes] if is_main() else None
    dist.gather(padded, parts, dst=0)
    return [part[:n] for part, n in zip(parts, sizes, strict=True)] if is_main() else None


def other_ranks(gathered: torch.Tensor) -> torch.Tensor | None:
    """The rows of an `all_gather` result that came from the other ranks; None with one process."""
    if not enabled():
        return None
    n, r = gathered.shape[0] // world_size(), rank()
    return torch.cat([gathered[: r * n], gathered[(r + 1) * n :]])


def gather_others(z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The other ranks' rows of `z` (with their gradient, which flows back to the rank that computed them) and of
    `ids` (detached), as extra keys for a contrastive loss; (None, None) with one process."""
    if not enabled():
        return None, None
    return other_ranks(all_gather(z, with_grad=True)), other_ranks(all_gather(ids))


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks (for logging)."""
    if not enabled():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (every rank must call it at the same point)."""
    if not enabled():
        return flag
    x = torch.tensor([float(flag)], device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item())


def mean_scalars(values: dict[str, float]) -> dict[str, float]:
    """Each scalar averaged over the ranks: what rank 0 logs describes the global batch."""
    if not enabled():
        return values
    averaged = mean(torch.tensor(list(values.values()), dtype=torch.float64))
    return dict(zip(values, averaged.tolist(), strict=True))


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s (picklable) object on every rank."""
    if not enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel (gradients averaged over the ranks) when several processes train.

    Parameters without requires_grad (MoCo's momentum encoder) stay outside DDP's gradient buckets. Buffers are
    not broadcast each step: queues are filled from every rank's keys, so they are equal everywhere; BatchNorm
    running statistics are equal under sync BN and otherwise only rank 0's are used (evaluation, checkpoints).
    """
    if not enabled():
        return module
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync())


def no_buffer_sync() -> dict:
    """DistributedDataParallel's argument for "do not broadcast buffers before each forward", in this PyTorch's
    words: `forward_sync_buffers=False` where it exists (it deprecates `broadcast_buffers`), else
    `broadcast_buffers=False` (older PyTorch, e.g. 2.11). The older one also skips the broadcast at construction;
    every rank builds its model from the same seed or checkpoint, so the buffers start equal either way."""
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers whose batch statistics cover the global batch (every rank's samples).

    On CUDA, torch's SyncBatchNorm (through timm, which also converts its BatchNormAct layers); torch's refuses CPU
    tensors, so on the CPU (gloo) plain BatchNorm1d/2d/3d layers become `GlooSyncBatchNorm`. A no-op with one
    process. Parameter and buffer names are unchanged, so checkpoints load with or without it.
    """
    if not enabled():
        return module
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        converted = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    if isinstance(module, _BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        raise UserError(f"model.sync_bn on the CPU converts plain BatchNorm layers only; this model has "
                        f"{type(module).__name__} - use model.sync_bn=false")
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are the mean and (biased) variance over every rank's batch,
    computed with autograd-aware all-reduces (two passes, as precise as one-process BatchNorm), so the gradient
    is that of BatchNorm over the global batch. Eval mode and one process: plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and enabled()):
            return super().forward(x)
        all_reduce = _AllReduceWithGrad.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in float32 at least
        count = torch.tensor([xf.numel() / xf.shape[1]], dtype=xf.dtype, device=xf.device)
        sums = all_reduce(torch.cat([xf.sum(dims), count]))
        n = sums[-1].detach()
        mu = sums[:-1] / n
        centered = xf - mu.view(shape)
        var = all_reduce((centered * centered).sum(dims)) / n
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mu.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), factor)
        return y.to(x.dtype)
