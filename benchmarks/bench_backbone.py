"""Image-encoding throughput of the ConceptCLIP architecture: backbone adapter vs bare model.

Builds the reference model (random weights, full size by default: 384 px, so400m/14 +
BERT-base, ~0.54 B parameters), then for each dtype times, on the same batch of random
pixels, the bare ``model(pixel_values=...)`` forward and ``ConceptCLIPBackbone.encode_images``.
Runs alternate (bare, adapter, bare, ...) so drift in machine load hits both; the
reported ratio ``adapter_s / bare_s`` is the adapter's overhead (1.0 = none).

It also times the text tower (8 prompts padded to 77 tokens), reports how far bfloat16
embeddings lie from float32 ones, the bfloat16 / float32 speed-ups, what ``dtype="auto"``
resolves to on this machine and the CPU flags that decided it (``avx512_bf16``, ``amx_bf16``,
arm64 ``bf16``). ``--flavour open_clip`` runs the stand-in with the released model's
open_clip/timm layout instead.

Usage::

    python benchmarks/bench_backbone.py --json                 # batch 2, 2 repeats
    python benchmarks/bench_backbone.py --size tiny --json     # smoke test, seconds
    python benchmarks/bench_backbone.py --flavour open_clip    # the open_clip-layout stand-in
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from conceptlens.models import ConceptCLIPBackbone, create_reference_model
from conceptlens.models.factory import resolve_device, resolve_dtype
from conceptlens.models.runtime import auto_dtype, cpu_flags, dtype_name

PROMPTS = [f"This is dermatoscopy of {c}." for c in (
    "pigment network", "blue whitish veil", "irregular streaks", "regression structures",
    "atypical vascular pattern", "irregular dots and globules", "irregular pigmentation", "a mole")]


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def run(size: str, batch: int, repeats: int, warmup: int, dtypes: list[str], device: str | None,
        seed: int = 0, flavour: str = "transformers") -> dict:
    """Run the benchmark and return the JSON-ready result."""
    torch_device = resolve_device(device)
    start = time.perf_counter()
    model, processor = create_reference_model(size, seed=seed, flavour=flavour)
    build_s = time.perf_counter() - start
    model.to(torch_device)
    side = ConceptCLIPBackbone(model, processor).image_size[0]
    reference: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)
    pixels_cpu = torch.rand(batch, 3, side, side, generator=generator) * 2 - 1
    results: dict[str, dict] = {}
    for name in dtypes:
        dtype = resolve_dtype(name, torch_device)
        model.to(dtype=dtype)
        backbone = ConceptCLIPBackbone(model, processor)
        pixels = pixels_cpu.to(device=torch_device, dtype=dtype)

        def bare(pixels=pixels):
            with torch.no_grad():
                return model(pixel_values=pixels)["image_features"]

        def adapter(pixels=pixels, backbone=backbone):
            return backbone.encode_images(pixels).global_embeds

        for _ in range(warmup):
            bare()
            adapter()
        bare_times, adapter_times = [], []
        for _ in range(repeats):
            bare_times += _time(bare, 1)
            adapter_times += _time(adapter, 1)
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        same = torch.allclose(bare().float(), adapter().float(), atol=tolerance)
        bare_s, adapter_s = statistics.median(bare_times), statistics.median(adapter_times)
        backbone.encode_texts(PROMPTS)  # warm-up
        text_times = _time(lambda backbone=backbone: backbone.encode_texts(PROMPTS), repeats)
        image_embeds = adapter().float().cpu()
        text_embeds = backbone.encode_texts(PROMPTS).global_embeds.float().cpu()
        cosines = image_embeds @ text_embeds.T
        if dtype == torch.float32:
            reference = {"image": image_embeds, "text": text_embeds, "cos": cosines}
        results[str(dtype).removeprefix("torch.")] = {
            "bare_s_per_batch": round(bare_s, 4),
            "adapter_s_per_batch": round(adapter_s, 4),
            "bare_images_per_s": round(batch / bare_s, 3),
            "adapter_images_per_s": round(batch / adapter_s, 3),
            "adapter_overhead_ratio": round(adapter_s / bare_s, 4),
            "bare_times_s": [round(t, 4) for t in bare_times],
            "adapter_times_s": [round(t, 4) for t in adapter_times],
            "same_embeddings": bool(same),
            "text_s_per_8_prompts": round(statistics.median(text_times), 4),
        }
        if reference and dtype != torch.float32:
            results[dtype_name(dtype)]["max_abs_diff_vs_float32"] = {
                key: round(float((value - reference[key]).abs().max()), 6)
                for key, value in (("image", image_embeds), ("text", text_embeds),
                                   ("cos", cosines))
            }
    speedup = {}
    if "float32" in results and "bfloat16" in results:
        fp32, bf16 = results["float32"], results["bfloat16"]
        speedup = {
            "image": round(fp32["bare_s_per_batch"] / bf16["bare_s_per_batch"], 3),
            "text": round(fp32["text_s_per_8_prompts"] / bf16["text_s_per_8_prompts"], 3),
        }
    return {
        "benchmark": "backbone_image_encoding",
        "model": f"ConceptCLIP-architecture reference model, size={size}, flavour={flavour}, "
                 "random weights",
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_size": side,
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
        "build_s": round(build_s, 3),
        "device": str(torch_device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu_bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"}),
        "auto_dtype": dtype_name(auto_dtype(torch_device)),
        "bfloat16_speedup_vs_float32": speedup,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--flavour", choices=("transformers", "open_clip"), default="transformers")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default=None, help="default: cuda, mps, else cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch and --repeats must be >= 1, --warmup >= 0")
    result = run(args.size, args.batch, args.repeats, args.warmup, args.dtypes, args.device,
                 flavour=args.flavour)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for dtype, r in result["results"].items():
            print(f"{dtype:>9}: bare {r['bare_images_per_s']:.3f} img/s, adapter "
                  f"{r['adapter_images_per_s']:.3f} img/s, overhead x{r['adapter_overhead_ratio']}, "
                  f"text {r['text_s_per_8_prompts']:.3f} s / 8 prompts")
        print(f"auto -> {result['auto_dtype']} (CPU bf16 flags: {result['cpu_bf16_flags']}); "
              f"bf16 speed-up: {result['bfloat16_speedup_vs_float32']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
