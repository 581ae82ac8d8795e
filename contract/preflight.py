"""Preflight: a job's peak memory per device and its time, estimated before it runs (no torch).

The gateway calls ``estimate_job`` at submission with ``config.json`` and the checkpoint's tensor
shapes (from the safetensors headers) and stores the result in the job record as ``estimate``; a
job whose peak exceeds ``CURVEDIT_WORKER_MEMORY_GB`` is refused with a 422 that names the knob to
change (``check_fits``). The worker can call the same function with the loaded model's config and
parameter shapes. The model is a sum of named terms, each in bytes (see ``docs/performance.md``):

- ``weights``: every checkpoint tensor, in the load dtype (``model.dtype``; ``auto`` = the
  config's ``torch_dtype``, else float32). With ``CURVEDIT_DEVICE_MAP`` set the weights spread
  over ``CURVEDIT_WORKER_DEVICES`` devices; everything else is counted on one device.
- ``accumulators``: float32 ``A`` (in x in) and ``G`` (out x out) sums per edited target, twice
  (the open summation segment's and the total, ``contract.summation``), plus the open unit: a
  fresh float32 copy of one unit's rows (``ROWS_PER_UNIT x seq_len`` positions) of the widest
  factor, and, when ``batch_size`` is not a multiple of ``ROWS_PER_UNIT``, up to
  ``ROWS_PER_UNIT - 1`` buffered rows of every target's inputs and output gradients.
- ``activations``: what autograd keeps per token (``batch_size x seq_len`` tokens) for the decoder
  layers from the earliest edited one to the top — per layer ``ACT_HIDDEN`` hidden-size vectors,
  k and v, and ``ACT_INTERMEDIATE`` (gated MLP) or ``ACT_INTERMEDIATE_PLAIN`` MLP-size vectors
  (more for an activation written out in tensor ops, ``COMPOSED_ACTIVATIONS``) in the load dtype
  (the weights are frozen, so no matrix product keeps its input; fused attention keeps q, k, v
  and its output, not the probabilities — only ``attn_implementation: eager`` adds heads x
  seq_len per token), and the captured inputs and output gradients of the edited targets
  (float32) — plus the transient activations of one layer below the cut and the final hidden
  states and their gradient.
- ``logits_chunk``: ``LOGITS_COPIES`` float32 (chunk x vocabulary) blocks (logits, probabilities,
  their gradient). A chunk never spans two sequences, so chunk = ``min(curvature.logits_chunk,
  seq_len)`` positions for a text model.

An image classifier (ViT; ``ModelDims.image_tokens`` > 0) is the same model with a sequence of
``(image_size / patch_size)^2 + 1`` tokens per image (the patches and [CLS]): a batch is
``calibration.batch_size`` images, the token budget is ``max_images`` x tokens per image, and the
head has one row of logits per image (over the labels, the "vocabulary"), not one per token.
- ``eigen``: eigenvectors of every factor (``curvature.eig_dtype``) plus one eigh workspace of the
  largest factor; ``rotations``: a sweep's float32 ``C = U_G^T W U_A`` per target (a search's when
  they fit ``SEARCH_ROTATIONS_BYTES``).
- ``runtime``: the fixed host memory of a worker process before any of the above
  (``RUNTIME_BYTES``, measured: see there). It is host memory only: on a GPU,
  ``torch.cuda.max_memory_allocated`` does not see it (nor the CUDA context).

Phases do not all coexist: the peak is ``weights + accumulators + max(collection, eigen, edit)
+ runtime`` with collection = activations + logits chunk, eigen = eigenvectors + workspace and
edit = eigenvectors + rotations. Time is FLOPs / ``CURVEDIT_WORKER_TFLOPS``: forward 2 x (matrix
parameters) per token plus attention, the backward from the top to the cut (input gradients only,
about one forward of those layers), the factor products (2 in^2 + 2 samples out^2 per token per
target), 10 n^3 per eigendecomposition and 4 (out^2 in + out in^2) per target per sweep point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from contract.families import family_of
from contract.summation import ROWS_PER_UNIT

GIB = 2**30
# Per token and decoder layer above the cut, what autograd saves for input gradients with frozen
# weights: the two norms' inputs, q and the attention output, plus two more hidden-size vectors of
# transients and allocator slack (the resident-set slope over layers in bench/bench_preflight.py's
# fit shapes F1/F3 is ~17 % above the saved bytes) ...
ACT_HIDDEN = 6
# ... (plus k and v at kv width), and gate, up and the activation's output (the product's inputs)
# of a gated MLP (a family with a gate projection, or an unknown one); a plain MLP (ViT, GPT-NeoX)
# keeps only the activation's input, unless the activation is written out in tensor ops
# (``hidden_act`` / ``activation_function``): GPT-2's ``gelu_new`` keeps its input, the inner sum,
# the tanh and a product (counted by tests/test_preflight_activations.py).
ACT_INTERMEDIATE = 3
ACT_INTERMEDIATE_PLAIN = 1
COMPOSED_ACTIVATIONS = {"gelu_new": 4}
LOGITS_COPIES = 3
# A goal-directed search keeps every candidate target's C when they all fit this (float32 bytes);
# workers/pipeline/search_stage.py reads it from here.
SEARCH_ROTATIONS_BYTES = 2 * 2**30
# The fixed host memory of a worker process: the interpreter, torch, transformers and the model's
# modelling code imported, plus what the first model build and the first collection allocate
# whatever the sizes (thread pools, kernels, allocator arenas). Measured directly, as the peak
# resident set of a process that imports all that, builds a 1-layer width-64 model and collects
# over 32 tokens, less that probe's own modelled terms: 419 MiB in four runs (torch 2.13,
# transformers 5.24, Linux x86-64, CPU); `bench/bench_preflight.py --runtime` remeasures it. Not
# fitted to any residual of the shapes the bench validates.
RUNTIME_BYTES = 419 * 2**20
EIGH_FLOPS_PER_N3 = 10.0
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TargetShape:
    """One edited linear map: its layer index (None: not in a decoder layer) and (out, in)."""

    layer: int | None
    out_features: int
    in_features: int


@dataclass(frozen=True)
class ModelDims:
    """What the estimate needs from ``config.json`` and the tensor shapes."""

    hidden: int
    intermediate: int
    vocab: int  # the head's output width: an LM's vocabulary, a classifier's number of labels
    layers: int
    heads: int
    kv_dim: int  # width of k (and of v)
    params: int  # every checkpoint tensor's element count
    matrix_params: int  # element count of the 2-D weights except embeddings (forward FLOPs / 2)
    checkpoint_dtype: str
    image_tokens: int = 0  # an image classifier's tokens per image (patches + [CLS]); 0: a text model
    eager_attention: bool = False  # config attn_implementation 'eager': autograd keeps the probabilities
    mlp_vectors: int = ACT_INTERMEDIATE  # MLP-width vectors autograd keeps per token and layer


def _cfg(config: Mapping[str, Any], *names: str, default: int = 0) -> int:
    sub = config.get("text_config")
    for c in (config, sub if isinstance(sub, Mapping) else {}):
        for n in names:
            v = c.get(n)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return default


def image_tokens(config: Mapping[str, Any]) -> int:
    """Tokens per image of a ViT-style classifier: one per ``patch_size`` patch of an ``image_size``
    image, plus [CLS] (sizes are ints or (height, width) pairs); 0 when the config has no sizes."""

    def pair(v: Any) -> tuple[int, int] | None:
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v, v
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v):
            return int(v[0]), int(v[1])
        return None

    image, patch = pair(config.get("image_size")), pair(config.get("patch_size"))
    if image is None or patch is None:
        return 0
    return (image[0] // patch[0]) * (image[1] // patch[1]) + 1


def model_dims(config: Mapping[str, Any], shapes: Mapping[str, Shape | None]) -> ModelDims:
    """Sizes from ``config.json`` (Llama-, GPT-2-, NeoX- and ViT-style names) and the tensor shapes."""
    family = family_of(str(config.get("model_type", "")))
    classifier = family is not None and family.kind == "image_classifier"
    hidden = _cfg(config, "hidden_size", "n_embd", "d_model")
    heads = _cfg(config, "num_attention_heads", "n_head", default=1)
    kv_heads = _cfg(config, "num_key_value_heads", default=heads)
    known = [s for s in shapes.values() if s is not None]
    params = sum(_numel(s) for s in known)
    embeddings = {n for n in shapes if any(p in n for p in ("embed", "wte", "wpe"))}
    matrix = sum(_numel(s) for n, s in shapes.items() if s is not None and len(s) == 2 and n not in embeddings)
    if classifier:  # the head's width is the number of labels (transformers' default: 2)
        labels = config.get("id2label")
        vocab = _cfg(config, "num_labels", default=len(labels) if isinstance(labels, Mapping) and labels else 2)
    else:
        vocab = _cfg(config, "vocab_size", "n_vocab")
    tied = not classifier and bool(config.get("tie_word_embeddings", True)) and not any("lm_head" in n for n in shapes)
    if tied and vocab and hidden:
        matrix += vocab * hidden  # the tied head multiplies like any output projection
    dtype = str(config.get("torch_dtype") or (config.get("text_config") or {}).get("torch_dtype") or "float32")
    return ModelDims(
        hidden=hidden,
        intermediate=_cfg(config, "intermediate_size", "n_inner", default=4 * hidden),
        vocab=vocab,
        layers=_cfg(config, "num_hidden_layers", "n_layer", "num_layers"),
        heads=heads,
        kv_dim=hidden // heads * kv_heads if heads else hidden,
        params=params,
        matrix_params=matrix,
        checkpoint_dtype=dtype if dtype in DTYPE_BYTES else "float32",
        image_tokens=image_tokens(config) if classifier else 0,
        eager_attention=config.get("attn_implementation", config.get("_attn_implementation")) == "eager",
        mlp_vectors=_mlp_vectors(config, gated=family is None or "gate" in family.roles),
    )


def _mlp_vectors(config: Mapping[str, Any], *, gated: bool) -> int:
    """MLP-width vectors autograd keeps per token and layer (see ``ACT_INTERMEDIATE``)."""
    if gated:
        return ACT_INTERMEDIATE
    sub = config.get("text_config")
    act = next((c.get(k) for c in (config, sub if isinstance(sub, Mapping) else {})
                for k in ("hidden_act", "activation_function") if isinstance(c.get(k), str)), None)  # fmt: skip
    return COMPOSED_ACTIVATIONS.get(str(act), ACT_INTERMEDIATE_PLAIN)


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@dataclass(frozen=True)
class JobShape:
    """The spec fields the estimate reads (``contract.spec.EditJobSpec`` -> ``job_shape``)."""

    dtype: str  # model.dtype ('auto' = the checkpoint's)
    batch_size: int  # sequences (an image classifier's: images) per pass
    seq_len: int  # an image classifier's: tokens per image (``ModelDims.image_tokens``)
    max_tokens: int  # an image classifier's: max_images x tokens per image
    logits_chunk: int
    samples: int
    eig_dtype: str
    sweep_points: int  # keep_mass values, or the search's max_trials
    search: bool = False  # a goal-directed job (objective): trials instead of a sweep


@dataclass(frozen=True)
class Capacity:
    """The worker the job will run on (from Settings)."""

    memory_gb: float | None = None  # None: no limit is enforced
    tflops: float = 0.5
    devices: int = 1
    device_map: str | None = None


@dataclass
class Estimate:
    """Peak bytes per device (with its terms) and seconds, as stored in the job record."""

    peak_bytes: int
    peak_gb: float
    memory: dict[str, int]
    phase_bytes: dict[str, int]
    flops: dict[str, float]
    seconds: float
    tflops: float
    memory_limit_gb: float | None
    fits: bool
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(dims: ModelDims, targets: Sequence[TargetShape], job: JobShape, capacity: Capacity) -> Estimate:
    """Memory per device and time of one edit job (see the module docstring for the model)."""
    load = dims.checkpoint_dtype if job.dtype == "auto" else job.dtype
    wb = DTYPE_BYTES.get(load, 4)
    eb = DTYPE_BYTES.get(job.eig_dtype, 4)
    tokens_per_batch = job.batch_size * job.seq_len
    weights = dims.params * wb
    if capacity.device_map and capacity.devices > 1:
        weights = -(-weights // capacity.devices)
    sq = [t.in_features**2 + t.out_features**2 for t in targets]
    unit_positions = ROWS_PER_UNIT * job.seq_len
    widest = max((max(t.in_features, job.samples * t.out_features) for t in targets), default=0)
    unit = 4 * unit_positions * widest  # the product's copy of one unit of one factor
    if job.batch_size % ROWS_PER_UNIT:  # rows of the open unit wait for the next batch
        held = (ROWS_PER_UNIT - 1) * job.seq_len
        unit += 4 * held * sum(t.in_features + job.samples * t.out_features for t in targets)
    accumulators = 2 * 4 * sum(sq) + unit  # the open segment's sums beside the total
    layers_idx = [t.layer for t in targets if t.layer is not None]
    first = min(layers_idx) if layers_idx else 0
    above = max(dims.layers - first, 1)
    probs = dims.heads * job.seq_len if dims.eager_attention else 0  # fused attention keeps none
    per_layer_token = wb * (ACT_HIDDEN * dims.hidden + 2 * dims.kv_dim + dims.mlp_vectors * dims.intermediate + probs)
    captured = 4 * sum(t.in_features + t.out_features for t in targets)
    below = wb * (4 * dims.hidden + 3 * dims.intermediate + probs)
    final = 2 * 4 * dims.hidden
    activations = tokens_per_batch * (above * per_layer_token + captured + below + final)
    # logits rows at once: a chunk of one sequence's positions, or one per image of a classifier
    chunk = job.batch_size if dims.image_tokens else min(job.logits_chunk, job.seq_len)
    logits = LOGITS_COPIES * 4 * chunk * dims.vocab + 8 * chunk * job.samples
    largest = max((max(t.in_features, t.out_features) for t in targets), default=0)
    eigvecs = eb * sum(sq)
    workspace = 2 * eb * largest**2
    c_bytes = 4 * sum(t.in_features * t.out_features for t in targets)
    if job.search:
        rotations = c_bytes if c_bytes <= SEARCH_ROTATIONS_BYTES else 0
    else:
        rotations = c_bytes if job.sweep_points > 1 else 0
    phases = {
        "collection": activations + logits,
        "eigen": eigvecs + workspace,
        "edit": eigvecs + rotations,
    }
    peak = weights + accumulators + max(phases.values()) + RUNTIME_BYTES

    tokens = job.max_tokens
    forward = 2.0 * dims.matrix_params + 4.0 * dims.layers * job.seq_len * dims.hidden / 2
    head_rows_per_token = 1.0 / dims.image_tokens if dims.image_tokens else 1.0  # a classifier's: per image
    backward = (2.0 * dims.matrix_params * above / max(dims.layers, 1)) + (
        2.0 * dims.vocab * dims.hidden * head_rows_per_token
    )
    factor_products = sum(2.0 * t.in_features**2 + 2.0 * job.samples * t.out_features**2 for t in targets)
    flops = {
        "collection": tokens * (forward + backward + factor_products),
        "eigen": EIGH_FLOPS_PER_N3 * sum(float(t.in_features) ** 3 + float(t.out_features) ** 3 for t in targets),
        "projection": job.sweep_points
        * sum(4.0 * (t.out_features**2 * t.in_features + t.out_features * t.in_features**2) for t in targets),
    }
    limit = capacity.memory_gb
    return Estimate(
        peak_bytes=int(peak),
        peak_gb=round(peak / GIB, 3),
        memory={
            "weights": int(weights),
            "accumulators": int(accumulators),
            "activations": int(activations),
            "logits_chunk": int(logits),
            "eigenvectors": int(eigvecs + workspace),
            "rotations": int(rotations),
            "runtime": RUNTIME_BYTES,
        },
        phase_bytes={k: int(v) for k, v in phases.items()},
        flops=flops,
        seconds=round(sum(flops.values()) / (capacity.tflops * 1e12), 3),
        tflops=capacity.tflops,
        memory_limit_gb=limit,
        fits=limit is None or peak <= limit * GIB,
        assumptions={
            "load_dtype": load,
            "tokens": tokens,
            "tokens_per_batch": tokens_per_batch,
            "logits_chunk_positions": chunk,
            "targets": len(targets),
            "layers_with_activations": above,
            "devices_for_weights": capacity.devices if capacity.device_map else 1,
        }
        | ({"tokens_per_image": dims.image_tokens} if dims.image_tokens else {}),
    )


def knob_advice(est: Estimate, job: JobShape) -> str:
    """Which setting to change, largest memory term first, for a job that does not fit."""
    terms = sorted(est.memory.items(), key=lambda kv: -kv[1])
    advice = []
    for name, _ in terms:
        if name == "activations" and job.batch_size > 1:
            advice.append(f"lower calibration.batch_size (now {job.batch_size})")
        elif name == "weights":
            if est.assumptions["load_dtype"] == "float32":
                advice.append("load the model in model.dtype 'bfloat16'")
            advice.append("spread the weights over devices with CURVEDIT_DEVICE_MAP (e.g. 'auto')")
        elif name == "logits_chunk" and job.logits_chunk > 64 and "tokens_per_image" not in est.assumptions:
            advice.append(f"lower curvature.logits_chunk (now {job.logits_chunk})")
        elif name in ("accumulators", "eigenvectors"):
            if name == "accumulators" and job.batch_size % ROWS_PER_UNIT:
                advice.append(
                    f"use a calibration.batch_size that is a multiple of {ROWS_PER_UNIT} (now {job.batch_size})"
                )
            advice.append("edit fewer layers or projections (edit.layers / edit.projections)")
    return "; ".join(dict.fromkeys(advice)) or "edit fewer targets"


def check_fits(est: Estimate, job: JobShape) -> str | None:
    """None when the job fits the worker's memory; else the message of the 422."""
    if est.fits or est.memory_limit_gb is None:
        return None
    top = ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in sorted(est.memory.items(), key=lambda kv: -kv[1]) if v)
    return (
        f"the job needs about {est.peak_gb:.2f} GiB per device but workers have "
        f"CURVEDIT_WORKER_MEMORY_GB={est.memory_limit_gb:g} ({top}): {knob_advice(est, job)}"
    )
