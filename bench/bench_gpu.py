"""Benchmark: the whole engine at OLMo-2-7B width -- collection, eigh, selection, projection, memory.

A randomly initialised OLMo-2-shaped model (``Olmo2Config``: hidden 4096, MLP 11008, vocabulary
100 278, only ``--layers`` 4 blocks so it builds in seconds; bfloat16 on a GPU) edits gate and up
of its last three layers at sequence length 512. Measured in this one run and printed:

* collection: tokens/s of ``collect_factors`` (sampled Fisher, chunked logits, ``--precision``)
  and its ratio to a plain forward pass over the same tokens (target on a GPU: <= 1.5);
* ``torch.linalg.eigh`` of the 11008 x 11008 G factor (and the 4096 x 4096 A factor);
* ``curvature_mask`` at 4096 x 11008 on the collected spectra (target < 20 ms on a GPU host)
  against a per-pair heap (pop the largest product, push its two neighbours): the heap runs up to
  ``--heap-seconds`` and, when it cannot finish, its time is extrapolated from its pop rate to the
  number of kept pairs (said so in the output); when it finishes, both masks must be equal;
* projection ``W' = U_G (C ⊙ M) U_A^T`` of one 11008 x 4096 weight;
* peak memory (``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on CPU)
  against the preflight estimate when a preflight module is present (else ``preflight: n/a``).

``--small`` runs a reduced width on CPU (hidden 256, MLP 688, vocabulary 8192, sequence 128) in
well under two minutes; any size can be overridden. Full width targets one GPU in < 6 minutes.
Rerun with::

    python bench/bench_gpu.py                 # full width, on the GPU
    python bench/bench_gpu.py --small         # reduced width, on CPU
"""

from __future__ import annotations

import argparse
import heapq
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from transformers import AutoModelForCausalLM, Olmo2Config  # noqa: E402

from workers.curvature.eigen import eigendecompose  # noqa: E402
from workers.curvature.factors import collect_factors  # noqa: E402
from workers.curvature.projection import project  # noqa: E402
from workers.curvature.selection import curvature_mask  # noqa: E402
from workers.curvature.targets import resolve_targets  # noqa: E402

FULL = {"hidden": 4096, "intermediate": 11008, "vocab": 100_278, "heads": 32, "seq": 512, "tokens": 16_384, "batch": 4}
SMALL = {"hidden": 256, "intermediate": 688, "vocab": 8192, "heads": 8, "seq": 128, "tokens": 2048, "batch": 4}
RHO = 0.9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def heap_select(
    lam: list[float], mu: list[float], rho: float, budget_s: float
) -> tuple[set[tuple[int, int]], bool, int, float]:
    """The reference-style selection: pop the largest remaining product until rho of the mass is kept.

    Returns (kept pairs, finished, pops, seconds); stops unfinished after ``budget_s`` seconds."""
    m, n = len(lam), len(mu)
    target = rho * sum(lam) * sum(mu)
    heap = [(-lam[0] * mu[0], 0, 0)]
    seen = {(0, 0)}
    kept: set[tuple[int, int]] = set()
    mass = 0.0
    t0 = time.perf_counter()
    while mass < target and heap:
        neg, i, j = heapq.heappop(heap)
        kept.add((i, j))
        mass -= neg
        for a, b in ((i + 1, j), (i, j + 1)):
            if a < m and b < n and (a, b) not in seen:
                seen.add((a, b))
                heapq.heappush(heap, (-lam[a] * mu[b], a, b))
        if len(kept) % 4096 == 0 and time.perf_counter() - t0 > budget_s:
            return kept, False, len(kept), time.perf_counter() - t0
    return kept, True, len(kept), time.perf_counter() - t0


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "peak RSS of this process"


def preflight_estimate(model: Any, targets: list[Any], size: dict[str, int], dtype: str, chunk: int) -> Any:
    """``contract.preflight.estimate`` for this model and job (None when the module is absent)."""
    try:
        from contract.preflight import Capacity, JobShape, TargetShape, estimate, model_dims
    except ImportError:
        return None
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    cfg = {**model.config.to_dict(), "torch_dtype": dtype}
    tshapes = [TargetShape(t.layer, t.out_features, t.in_features) for t in targets]
    n_seq = max(1, size["tokens"] // size["seq"])
    job = JobShape(dtype, size["batch"], size["seq"], n_seq * size["seq"], chunk, 1, "float32", 1)
    return estimate(model_dims(cfg, shapes), tshapes, job, Capacity())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="reduced width on CPU")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --small)")
    parser.add_argument("--layers", type=int, default=4)
    for key in ("hidden", "intermediate", "vocab", "heads", "seq", "tokens", "batch"):
        parser.add_argument(f"--{key}", type=int, default=None, help=f"override {key}")
    parser.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"], help="default tf32 on cuda")
    parser.add_argument("--logits-chunk", type=int, default=1024)
    parser.add_argument("--heap-seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = dict(SMALL if args.small else FULL)
    for key in size:
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.small else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    precision = args.precision or ("tf32" if device.type == "cuda" else "fp32")
    if args.layers < 3:
        parser.error("--layers must be >= 3 (gate+up of the last three layers are edited)")

    t0 = time.perf_counter()
    config = Olmo2Config(
        hidden_size=size["hidden"],
        intermediate_size=size["intermediate"],
        num_hidden_layers=args.layers,
        num_attention_heads=size["heads"],
        num_key_value_heads=size["heads"],
        vocab_size=size["vocab"],
        max_position_embeddings=max(4096, size["seq"]),
        tie_word_embeddings=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    build_s = time.perf_counter() - t0
    n_seq = max(1, size["tokens"] // size["seq"])
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, size["vocab"], (n_seq, size["seq"]), generator=gen).to(device)
    batches = [{"input_ids": ids[i : i + size["batch"]]} for i in range(0, n_seq, size["batch"])]
    tokens = int(ids.numel())
    layers = list(range(args.layers - 3, args.layers))
    targets = resolve_targets(model, layers=layers, projections=["gate", "up"])
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Olmo2 {args.layers} layers hidden {size['hidden']} MLP {size['intermediate']} vocab {size['vocab']} "
        f"({params / 1e9:.2f} B params, {dtype}) on {device}"
        + (f" [{torch.cuda.get_device_name(device)}]" if device.type == "cuda" else "")
        + f"; built in {build_s:.1f} s; {tokens} tokens = {n_seq} x {size['seq']}, batch {size['batch']}"
    )

    def forward() -> None:
        with torch.no_grad():
            for b in batches:
                model(input_ids=b["input_ids"], use_cache=False)

    def collect() -> Any:
        return collect_factors(
            model,
            batches,
            targets,
            "sampled",
            precision=precision,
            logits_chunk=args.logits_chunk,  # type: ignore[arg-type]
        )

    forward()  # warm-up (kernels, allocator)
    collect_factors(model, batches[:1], targets, "sampled", precision=precision)  # type: ignore[arg-type]
    fwd_s, _ = timed(device, forward)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    collect_s, factors = timed(device, collect)
    peak, peak_how = peak_memory(device)
    print(
        f"collection ({precision}, gate+up of layers {layers}): {collect_s:.2f} s = "
        f"{tokens / collect_s:,.0f} tokens/s; "
        f"plain forward {fwd_s:.2f} s = {tokens / fwd_s:,.0f} tokens/s -> collection = {collect_s / fwd_s:.2f} "
        f"forward passes (GPU target <= 1.5)"
    )
    est = preflight_estimate(model, targets, size, str(dtype).removeprefix("torch."), args.logits_chunk)
    if est is None:
        pre = "preflight: n/a (no contract.preflight in this tree)"
    else:
        # the estimate's peak adds a constant interpreter/runtime term that CUDA's allocator does not see
        modelled = est.memory["weights"] + est.memory["accumulators"] + est.phase_bytes["collection"]
        modelled += est.memory["runtime"] if device.type == "cpu" else 0
        pre = (
            f"preflight collection-phase estimate {modelled / 2**30:.2f} GiB "
            f"-> estimate / measured = {modelled / peak:.2f} (target within +-25 %); whole-job peak estimate "
            f"{est.peak_gb:.2f} GiB"
        )
    print(f"peak memory during collection: {peak / 2**30:.2f} GiB ({peak_how}); {pre}")
    if est is not None:
        terms = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in est.memory.items())
        print(f"preflight terms (MiB): {terms}; collection phase {est.phase_bytes['collection'] / 2**20:.0f}")

    last = targets[-1]  # up of the last layer: G is MLP x MLP, A is hidden x hidden
    f = factors[last.name]
    eig_g_s, eig_g = timed(device, lambda: eigendecompose(f.G_sum, f.count, torch.float32, device=device))
    eig_a_s, eig_a = timed(device, lambda: eigendecompose(f.A_sum, f.count, torch.float32, device=device))
    print(
        f"eigh: G {tuple(f.G_sum.shape)} {eig_g_s:.2f} s, A {tuple(f.A_sum.shape)} {eig_a_s:.2f} s "
        f"(float32 on {device})"
    )

    lam, mu = eig_g.values.cpu(), eig_a.values.cpu()
    curvature_mask(lam, mu, RHO)  # warm-up
    sel_s = min(timed(device, lambda: curvature_mask(lam, mu, RHO))[0] for _ in range(3))
    mask = curvature_mask(lam, mu, RHO)
    kept_pairs = int(mask.sum())
    kept, finished, pops, heap_s = heap_select(lam.double().tolist(), mu.double().tolist(), RHO, args.heap_seconds)
    if finished:
        same = kept == {(int(i), int(j)) for i, j in mask.nonzero().tolist()}
        heap_txt = f"heap {heap_s:.2f} s (finished; same pairs: {same})"
    else:
        heap_s = heap_s * kept_pairs / max(pops, 1)
        heap_txt = f"heap ~{heap_s:.0f} s (extrapolated from {pops:,} pops in {args.heap_seconds:.0f} s)"
    print(
        f"selection at {tuple(mask.shape)} rho {RHO}: curvature_mask {sel_s * 1e3:.1f} ms (mask included, host), "
        f"{kept_pairs:,} pairs kept; {heap_txt} -> heap / curvature_mask = {heap_s / sel_s:,.1f}x"
    )

    w = last.module(model).weight.detach()
    m_dev = mask.to(device)
    project(w, eig_g.vectors, eig_a.vectors, m_dev)  # warm-up
    proj_s, _ = timed(device, lambda: project(w, eig_g.vectors, eig_a.vectors, m_dev))
    print(f"projection of {tuple(w.shape)} ({w.dtype}, float32 bases): {proj_s:.3f} s")
    print(f"bench wall time {time.perf_counter() - t0:.1f} s")
    print("rerun: python bench/bench_gpu.py [--small] [--precision fp32|tf32|bf16] [--tokens N] [--layers N]")


if __name__ == "__main__":
    main()
