"""`selfsup-clusters bench`: how fast this machine trains, clusters and evaluates, measured through the training code.

Per method, a run is built by `run.setup` and timed by `trainer.train_epoch` (the loop itself: same batches,
augmentation, autocast, optimizer, memory bank): training images/s (both views counted), the data path's share of
step time (the same batches drawn alone), and model FLOPs utilisation (MFU): the FLOPs of one training step
(forward and backward, counted by torch.utils.flop_counter) times steps per second, over the peak FLOP/s measured in
the same run and dtype (the better of a large matmul and a large convolution), and over the CPU's physical peak
from its clock and vector units (`physical_peak`). Then the clustering step (FAISS
k-means over N x d unit vectors per K) with its share of an epoch, and weighted kNN over N_train x N_test features.
Prints tables and writes JSON.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from selfsup_clusters.clusters import KMeansOptions, run_kmeans
from selfsup_clusters.config import Config, split_values
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data import ImageDataset, Split, load_dataset
from selfsup_clusters.evaluation.evaluate import extract_features, weighted_knn
from selfsup_clusters.methods.registry import method_class
from selfsup_clusters.recipes import load_config
from selfsup_clusters.studies.tables import format_table
from selfsup_clusters.training.logger import RunLogger
from selfsup_clusters.training.provenance import cpu_fields, cpu_name
from selfsup_clusters.training.run import Run, autocast, resolve_device, resolve_precision, setup
from selfsup_clusters.training.trainer import clustering_due, epoch_generator, train_epoch, update_clusters


def synthetic_dataset(train: int, test: int, channels: int, size: int, seed: int = 0) -> ImageDataset:
    """Random uint8 images with random labels in 10 classes: a stand-in with real shapes, for machines without the
    data (speed does not depend on what the pixels show)."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
        return Split(images, torch.randint(0, 10, (n,), generator=generator))

    return ImageDataset("synthetic", split(train), split(test), [f"class{i}" for i in range(10)],
                        mean=(0.5,) * channels, std=(0.29,) * channels)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flop_rate(fn, device: torch.device, min_seconds: float = 0.3) -> float:
    """FLOP/s of `fn()`: FLOPs counted once by FlopCounterMode, then timed over repeats for at least min_seconds."""
    with FlopCounterMode(display=False) as counter:
        fn()
    fn()  # warm-up: kernel selection
    synchronize(device)
    repeats, start = 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - start < min_seconds:
        fn()
        repeats += 1
        if repeats % 4 == 0:
            synchronize(device)
    synchronize(device)
    return counter.get_total_flops() * repeats / (time.perf_counter() - start)


@torch.no_grad()
def peak_flops(device: torch.device, dtype: torch.dtype) -> dict:
    """The better of a large matmul and a large 3x3 convolution (channels_last) in `dtype`: on CPUs oneDNN's
    convolutions can beat torch.mm, so a matmul alone would understate what the hardware reaches."""
    gpu = device.type == "cuda"
    n = 8192 if gpu else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    channels, batch = (512, 256) if gpu else (256, 32)
    x = torch.randn(batch, channels, 28, 28, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype,
                                                                             memory_format=torch.channels_last)
    # The best of three: a peak measured low (clock ramp-up, a neighbour's burst) would inflate every MFU.
    matmul = max(flop_rate(lambda: a @ b, device) for _ in range(3))
    convolution = max(flop_rate(lambda: conv(x), device) for _ in range(3))
    return {"dtype": dtype_name(dtype), "matmul_gflops": matmul / 1e9,
            "conv_gflops": convolution / 1e9, "peak_gflops": max(matmul, convolution) / 1e9,
            "physical": physical_peak(device, dtype),
            "matmul": f"{n}x{n} @ {n}x{n}", "conv": f"{batch}x{channels}x28x28, {channels}->{channels} 3x3"}


def cpu_flags() -> tuple[set[str], float | None, int | None]:
    """/proc/cpuinfo's flags, clock (MHz) and AMD/Intel family of the first CPU (empty/None where unknown)."""
    fields = cpu_fields()
    mhz, family = fields.get("cpu MHz"), fields.get("cpu family")
    return set(fields.get("flags", "").split()), float(mhz) if mhz else None, int(family) if family else None


def physical_peak(device: torch.device, dtype: torch.dtype) -> dict | None:
    """The CPU's physical peak: threads x FMA pipes x vector lanes x 2 FLOPs x clock, from /proc/cpuinfo (hand-written:
    no library reports FMA pipes). Two FMA pipes per core (every AVX2/AVX-512 x86 core since Haswell and Zen 2);
    fp32 lanes 16 with AVX-512 on full-width units, 8 with AVX2 or with AVX-512 on AMD's 256-bit datapath before Zen 5
    (family 25: Zen 3/4). bf16: twice the fp32 rate with AVX512-BF16 (two products per fp32 lane); None without it
    (emulated) and with AMX (its tile rate is not modelled here). The clock is the one /proc/cpuinfo reports
    (nominal on most virtual machines; turbo can exceed it, so an MFU near 1 is possible). None on GPUs."""
    flags, mhz, family = cpu_flags()
    if device.type != "cpu" or mhz is None or not flags:
        return None
    lanes = 16 if "avx512f" in flags and family != 25 else 8 if "avx2" in flags else 4
    factor = 1
    if dtype == torch.bfloat16:
        if "avx512_bf16" not in flags or "amx_bf16" in flags:
            return None
        factor = 2
    threads = torch.get_num_threads()
    gflops = threads * 2 * lanes * 2 * factor * mhz / 1000
    return {"gflops": gflops, "formula": f"{threads} threads x 2 FMA pipes x {lanes * factor} {dtype_name(dtype)} "
                                         f"lanes x 2 x {mhz / 1000:.2f} GHz"}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def step_flops(run: Run) -> int:
    """FLOPs of one training step (forward and backward; matmuls and convolutions, as flop_counter counts)."""
    order = torch.arange(len(run.data.train), device=run.device)
    generator = epoch_generator(run.cfg, -1, run.device)
    views, index, labels = next(run.batches.train(run.data.train, order, run.cfg.batch_size, generator))
    with FlopCounterMode(display=False) as counter:
        with autocast(run):
            out = run.method.training_step(views, index, labels)
        out["loss"].backward()
    run.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def data_seconds(run: Run, steps: int) -> float:
    """Seconds to draw `steps` training batches (crop, flip, jitter, normalise every view) without training."""
    generator = epoch_generator(run.cfg, -2, run.device)
    order = torch.randperm(len(run.data.train), generator=generator, device=run.device)
    batches = run.batches.train(run.data.train, order, run.cfg.batch_size, generator)
    synchronize(run.device)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    synchronize(run.device)
    return time.perf_counter() - start


def timed_run(cfg: Config, data: ImageDataset, steps: int) -> tuple[Run, RunLogger]:
    """A run built as training builds it, whose `train_epoch` times `steps` steps (the benchmarks' unit)."""
    run = setup(cfg, data=data)
    run.steps_per_epoch = steps
    return run, RunLogger(run.out_dir, tensorboard=False)


def parse_variants(texts: list[str]) -> dict[str, list[str]]:
    """["base=", "t2=method_args.temperature=0.2,augment.crop_scale=[0.3,1.0]"] -> {name: [key=value, ...]} (the
    benchmark tools' --variant); commas inside brackets belong to one value."""
    variants = {}
    for text in texts:
        name, _, settings = text.partition("=")
        variants[name] = split_values(settings)
    return variants


def write_report(report: dict, path: str | Path) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


def bench_method(cfg: Config, data: ImageDataset, steps: int, warmup_steps: int,
                 peak: dict) -> tuple[dict, Run]:
    run, logger = timed_run(cfg, data, warmup_steps)  # warm-up: kernel selection, allocator growth, compilation
    if clustering_due(run, 0):
        update_clusters(run, 0, logger)
    train_epoch(run, 0, logger)
    flops = step_flops(run)
    run.steps_per_epoch = steps
    record = train_epoch(run, 1, logger)
    step_seconds = record["epoch_time_s"] / steps
    achieved = flops / step_seconds
    return {
        "method": cfg.method,
        "clusters": cfg.clusters.spec,
        "precision": run.precision,
        "images_per_s": record["images_per_s"],
        "step_ms": 1000 * step_seconds,
        "data_share": min(1.0, data_seconds(run, steps) / record["epoch_time_s"]),
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": achieved / 1e9,
        "mfu": achieved / 1e9 / peak["peak_gflops"],
        "mfu_physical": achieved / 1e9 / peak["physical"]["gflops"] if peak.get("physical") else None,
    }, run


def bench_kmeans(n: int, d: int, ks: list[int], niter: int, epoch_seconds: float) -> dict:
    features = F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(0)), dim=1)
    rows = []
    for k in ks:
        start = time.perf_counter()
        run_kmeans(features, [k], KMeansOptions(niter=niter), warn=False)
        seconds = time.perf_counter() - start
        rows.append({"K": k, "seconds": seconds, "share_of_epoch": seconds / epoch_seconds})
    return {"n": n, "d": d, "niter": niter, "epoch_seconds": epoch_seconds, "rows": rows}


def bench_sinkhorn(run: Run, step_ms: float, repeats: int = 20) -> dict:
    """SwAV's Sinkhorn-Knopp at the run's sizes (its batch plus queue rows, K prototypes, one call per view), per
    training step and as a share of the step."""
    from selfsup_clusters.methods.losses import sinkhorn

    method, generator = run.method, torch.Generator().manual_seed(0)
    k, views = method.prototypes.weight.shape[0], run.cfg.augment.views
    rows = run.cfg.batch_size + method.queue.shape[1]
    scores = F.normalize(torch.randn(rows, 128, generator=generator), dim=1) @ \
        F.normalize(torch.randn(k, 128, generator=generator), dim=1).T
    scores = scores.to(run.device)
    sinkhorn(scores, method.args.epsilon, method.args.sinkhorn_iterations)
    synchronize(run.device)
    start = time.perf_counter()
    for _ in range(repeats * views):
        sinkhorn(scores, method.args.epsilon, method.args.sinkhorn_iterations)
    synchronize(run.device)
    ms = 1000 * (time.perf_counter() - start) / repeats
    return {"K": k, "rows": rows, "views": views, "ms_per_step": ms, "share_of_step": ms / step_ms}


def bench_knn(run: Run, n_train: int, n_test: int, k: int, extract_batches: int = 3) -> dict:
    """kNN over random unit features of the backbone's width (its time depends on the sizes, not the values), and
    the feature extraction of n_train + n_test images extrapolated from `extract_batches` eval batches."""
    dim = run.method.feature_dim
    generator = torch.Generator().manual_seed(0)
    train = F.normalize(torch.randn(n_train, dim, generator=generator), dim=1)
    test = F.normalize(torch.randn(n_test, dim, generator=generator), dim=1)
    train_labels = torch.randint(0, 10, (n_train,), generator=generator)
    test_labels = torch.randint(0, 10, (n_test,), generator=generator)
    start = time.perf_counter()
    weighted_knn(train, train_labels, test, test_labels, k=k)
    knn_seconds = time.perf_counter() - start

    batch_size = run.cfg.eval.batch_size
    images = run.data.train.first(min(len(run.data.train), extract_batches * batch_size))
    with autocast(run):
        extract_features(run.method.features, run.batches.eval(images.first(batch_size), batch_size), [run.method])
        start = time.perf_counter()
        extract_features(run.method.features, run.batches.eval(images, batch_size), [run.method])
    per_image = (time.perf_counter() - start) / len(images)  # extract_features returns CPU tensors: synchronised
    return {"n_train": n_train, "n_test": n_test, "dim": dim, "k": k, "knn_seconds": knn_seconds,
            "extract_seconds_estimate": per_image * (n_train + n_test), "extract_images_timed": len(images)}


def run_bench(args) -> dict:
    methods = [m for m in (args.method or args.methods).split(",") if m]
    for name in methods:
        method_class(name)  # a typo fails before any measuring
    base = [f"model.backbone={args.backbone}", f"batch_size={args.batch_size}", f"data.image_size={args.image_size}",
            f"precision={args.precision}", f"device={args.device}", "log.progress=false", "log.every_steps=0",
            "log.tensorboard=false", *args.overrides]
    if args.dataset != "synthetic":
        base.append(f"data.name={args.dataset}")
    cfg = load_config(overrides=base)
    device = resolve_device(cfg.device)
    if args.dataset == "synthetic":
        data = synthetic_dataset(max(args.steps, args.warmup_steps) * args.batch_size, 100, args.channels,
                                 args.image_size)
    else:
        data = load_dataset(cfg.data)
    needed = max(args.steps, args.warmup_steps) * cfg.batch_size
    if needed > len(data.train):
        raise UserError(f"--steps {args.steps} at batch {cfg.batch_size} needs {needed} training images; "
                        f"{data.name} has {len(data.train)}: lower --steps or --batch-size")
    settings = {"dataset": data.name, "backbone": cfg.model.backbone, "batch_size": cfg.batch_size,
                "image_size": cfg.data.image_size, "channels": data.channels, "steps": args.steps,
                "warmup_steps": args.warmup_steps, "channels_last": cfg.model.channels_last,
                "compile": cfg.model.compile, "device": str(device)}
    machine = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability()}

    results: list[dict] = []
    runs: list[Run] = []
    peak = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in methods:
            spec = args.clusters if method_class(name).needs_cluster_spec else "none"
            method_cfg = load_config(overrides=[*base, f"method={name}", f"clusters.spec={spec}", f"out={tmp}/{name}"])
            if peak is None:  # the dtype is the run's resolved precision
                precision = resolve_precision(method_cfg.precision, device)
                peak = peak_flops(device, torch.bfloat16 if precision == "bf16" else torch.float32)
            result, run = bench_method(method_cfg, data, args.steps, args.warmup_steps, peak)
            results.append(result)
            runs.append(run)
            print(f"{name}: {results[-1]['images_per_s']:.0f} images/s", flush=True)
        first = results[0]
        epoch_seconds = args.kmeans_n / cfg.batch_size * first["step_ms"] / 1000
        kmeans = bench_kmeans(args.kmeans_n, args.kmeans_d, [int(k) for k in args.kmeans_ks.split(",")],
                              cfg.clusters.niter, epoch_seconds)
        kmeans["epoch"] = f"{first['method']}: {args.kmeans_n} images at {first['step_ms']:.0f} ms per batch of " \
                          f"{cfg.batch_size}"
        knn = bench_knn(runs[0], args.knn_train, args.knn_test, cfg.eval.knn_k)
        sinkhorn = [bench_sinkhorn(run, result["step_ms"]) for run, result in zip(runs, results, strict=True)
                    if result["method"] == "swav"]
    report = {"machine": machine, "settings": settings, "peak": peak, "methods": results, "kmeans": kmeans,
              "knn": knn, **({"sinkhorn": sinkhorn[0]} if sinkhorn else {})}
    print(format_report(report))
    write_report(report, args.out)
    return report


def format_report(report: dict) -> str:
    s, p = report["settings"], report["peak"]
    lines = [f"{report['machine']['device']} ({report['machine']['threads']} threads), {s['dataset']} "
             f"{s['channels']}x{s['image_size']}x{s['image_size']}, {s['backbone']}, batch {s['batch_size']}, "
             f"{s['steps']} steps after {s['warmup_steps']} warm-up",
             "",
             format_table([{"method": r["method"], "clusters": r["clusters"], "precision": r["precision"],
                            "images/s": round(r["images_per_s"]), "step ms": r["step_ms"],
                            "data share": r["data_share"], "GFLOP/step": r["gflop_per_step"],
                            "GFLOP/s": round(r["achieved_gflops"]), "MFU": r["mfu"],
                            "MFU physical": "-" if r.get("mfu_physical") is None else f"{r['mfu_physical']:.3f}"}
                           for r in report["methods"]]),
             "",
             f"measured peak ({p['dtype']}, the MFU column): matmul {p['matmul_gflops']:.0f} GFLOP/s ({p['matmul']}), "
             f"convolution {p['conv_gflops']:.0f} GFLOP/s ({p['conv']})",
             "physical peak: " + (f"{p['physical']['gflops']:.0f} GFLOP/s ({p['physical']['formula']})"
                                  if p.get("physical") else f"not modelled for {p['dtype']} on this device"),
             ""]
    k = report["kmeans"]
    lines.append(f"k-means over N={k['n']}, d={k['d']}, {k['niter']} iterations; epoch = {k['epoch']} "
                 f"({k['epoch_seconds']:.1f} s)")
    lines.append(format_table([{"K": r["K"], "seconds": r["seconds"],
                                "share of epoch": f"{r['share_of_epoch']:.2%}"} for r in k["rows"]]))
    if "sinkhorn" in report:
        h = report["sinkhorn"]
        lines += ["", f"SwAV's Sinkhorn ({h['rows']} rows x K={h['K']}, {h['views']} views): {h['ms_per_step']:.2f} ms "
                  f"a step, {h['share_of_step']:.1%} of its step"]
    n = report["knn"]
    lines += ["", f"kNN (k={n['k']}) over {n['n_train']} x {n['n_test']} features of dim {n['dim']}: "
              f"{n['knn_seconds']:.2f} s; extracting them: about {n['extract_seconds_estimate']:.1f} s "
              f"(timed on {n['extract_images_timed']} images)"]
    return "\n".join(lines)
