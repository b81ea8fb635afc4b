"""What exact attention costs at LRA Text's shape, per SDPA backend: is the transformer row slow because of us?

The LRA Text transformer trains at 144 ms a step alone on the H200, MAELRE at 52
(``benchmarks/results/alone_cost_text_h200.json``). Its attention goes through
``F.scaled_dot_product_attention`` with a per-key padding bias and attention dropout 0.1
(``maelre.layers.attention.exact_attention``), which FlashAttention does not take, so SDPA
falls back to another kernel. This times one attention call, forward and backward, at the
Text model's shape (batch 32, 4 heads, head dim 64, 4,000 positions, bf16) for:

- ``bias_dropout``: what the transformer runs (padding bias, dropout 0.1);
- ``bias``: the same without attention dropout;
- ``no_mask``: no bias, no dropout, padding attended to (FlashAttention's case; wrong for
  padded batches, a lower bound on the padded work);
- ``varlen``: ``torch.nn.attention.varlen.varlen_attn``, FlashAttention over the real tokens
  packed (no padding, no dropout); CUDA only.

Each variant runs on two input layouts (``--layouts``): ``contiguous`` ``[B, H, N, dh]`` tensors,
and ``model``: q, k and v as ``maelre.layers.attention.Attention.qkv`` hands them to SDPA, head
views of the self-attention projection's ``[B, N, 3D]`` output (q, k and v are its three thirds,
so their row stride is 3D; before session 19 q came from its own ``[B, N, D]`` and k, v from a
``[B, N, 2D]`` tensor). A backend's kernel choice can depend on strides,
so only the second says what the transformer's step gets.

``new_shapes`` (layout ``contiguous``, padding bias and dropout, under ``default``, ``cudnn``
and ``efficient``, and through ``maelre.layers.exact_attention``, which pads lengths to a multiple
of 128 on CUDA): every call has a sequence length no earlier call had (the batch maximum,
down from ``--seq-len`` in steps of 8). An eager fit pads each batch to its own longest
sequence, so at LRA Text nearly every step brings a new length: a backend that builds a plan
per shape (cuDNN) pays for it on every step, which the fixed-shape rows cannot show.

Each SDPA variant runs under every backend (``sdpa_kernel``): a backend that refuses the
inputs gets its error as the row's status. Batch lengths are drawn from the IMDB byte file
(``--data``, ``benchmarks/make_compact_data.py``) or are all full. Outputs of the dropout-free
variants are checked against the math backend on the real tokens (``max_abs_diff``).

    python benchmarks/sdpa_backends.py --data .carry/data/imdb_bytes.npz --out benchmarks/results/sdpa_backends_text_h200.json
    python benchmarks/sdpa_backends.py --device cpu --batch 2 --seq-len 64 --out /tmp/sdpa.json   # a smoke test
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maelre.bench.efficiency_case import time_step  # noqa: E402
from maelre.layers.attention import exact_attention, key_logit_bias  # noqa: E402
from maelre.fileio import write_json_atomic  # noqa: E402

BACKENDS = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}  # fmt: skip
VARIANTS = {"bias_dropout": (True, 0.1), "bias": (True, 0.0), "no_mask": (False, 0.0)}
"""SDPA variant -> (padding bias, dropout)."""


def batch_lengths(batch: int, seq_len: int, data: Path | None, seed: int) -> torch.Tensor:
    """``[batch]`` real lengths: drawn from the byte file's review lengths (cut to ``seq_len``), else all ``seq_len``."""
    if data is None:
        return torch.full((batch,), seq_len)
    lengths = np.minimum(np.load(data)["lengths"].astype(np.int64), seq_len)
    return torch.from_numpy(np.random.default_rng(seed).choice(lengths, batch))


LAYOUTS = ("contiguous", "model")


def attention_inputs(layout: str, shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """The leaves that take gradients and the ``(q, k, v)`` ``[B, H, N, dh]`` built from them in ``layout``."""
    b, h, n, dh = shape
    if layout == "contiguous":
        q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        return [q, k, v], (q, k, v)
    # Attention.qkv (self-attention): one [B, N, 3D] projection, split into q, k, v heads as views
    x_qkv = torch.randn(b, n, 3 * h * dh, device=device, dtype=dtype, requires_grad=True)
    heads = [t.view(b, n, h, dh).transpose(1, 2) for t in x_qkv.chunk(3, dim=-1)]
    return [x_qkv], tuple(heads)


def _sdpa(q, k, v, bias, dropout: float, backend: SDPBackend | None) -> torch.Tensor:
    with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)


def _varlen(q, k, v, lengths: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """FlashAttention over the packed real tokens (``real [B, N]``), scattered back to ``[B, H, N, dh]`` (zeros at padding)."""
    from torch.nn.attention.varlen import varlen_attn

    b, h, n, dh = q.shape
    packed = [t.transpose(1, 2)[real] for t in (q, k, v)]  # [T, H, dh] each
    cu = F.pad(lengths.to(q.device, torch.int32).cumsum(0, dtype=torch.int32), (1, 0))
    out = varlen_attn(*packed, cu, cu, int(lengths.max()), int(lengths.max()))
    full = q.new_zeros(b, n, h, dh)
    full[real] = out
    return full.transpose(1, 2)


NEW_SHAPE_BACKENDS = ("default", "cudnn", "efficient", "exact_attention")
"""SDPA backends of the ``new_shapes`` rows, then ``exact_attention``: the library's call (SDPA's default
backend on lengths padded to ``CUDA_LENGTH_MULTIPLE`` on CUDA), last, so that its padded lengths
build their plans in this row (a multiple of 128 among the earlier rows' lengths is its one overlap)."""
WARMUP = 3  # untimed calls before each case's timed ones


def real_tokens(lengths: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """``[B, n]`` bool: True at each row's first ``lengths[b]`` positions (the real tokens)."""
    return torch.arange(n, device=device)[None, :] < lengths.to(device)[:, None]


def new_shape_rows(args: argparse.Namespace, lengths: torch.Tensor, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """``new_shapes`` rows: padding bias and dropout, each timed call at a sequence length no call had before."""
    calls = WARMUP + args.repeats
    # one length per call of every backend, down from --seq-len in steps of 8: no row reuses another's plan
    all_ns = [args.seq_len - 8 * i for i in range(calls * len(NEW_SHAPE_BACKENDS))]
    if all_ns[-1] < 1:
        return [{"layout": "contiguous", "variant": "new_shapes", "backend": name, "case": f"new_shapes/{name}", "status": "skipped",
                 "error": f"--seq-len {args.seq_len} is too short for {len(all_ns)} distinct lengths"} for name in NEW_SHAPE_BACKENDS]  # fmt: skip
    rows = []
    for i, backend_name in enumerate(NEW_SHAPE_BACKENDS):
        ns = all_ns[i * calls : (i + 1) * calls]
        leaves, cases = [], []
        for n in ns:
            q, k, v = (torch.randn(args.batch, args.heads, n, args.head_dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
            leaves += [q, k, v]
            real = real_tokens(lengths, n, device)
            cases.append((q, k, v, real, key_logit_bias(None, real, dtype)))
        queue, dropout = iter(cases), VARIANTS["bias_dropout"][1]

        def fn(queue=queue, name=backend_name) -> torch.Tensor:
            q, k, v, real, bias = next(queue)
            if name == "exact_attention":
                return exact_attention(q, k, v, key_mask=real, dropout_p=dropout)
            return _sdpa(q, k, v, bias, dropout, BACKENDS[name])

        row = measure(f"new_shapes/{backend_name}", fn, leaves, device, args.repeats)
        rows.append({"layout": "contiguous", "variant": "new_shapes", "backend": backend_name, **row, "lengths": [ns[0], ns[-1]]})
    return rows


def measure(name: str, fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor], device: torch.device, repeats: int) -> dict:
    """Time ``fn`` forward and backward (``repeats`` after ``WARMUP`` calls); the error as ``status`` if it fails."""
    def step() -> None:
        for t in inputs:
            t.grad = None
        fn().float().square().mean().backward()

    try:
        with warnings.catch_warnings():  # a refusing backend warns why, then raises: the error says it once
            warnings.simplefilter("ignore", UserWarning)
            times = time_step(step, warmup=WARMUP, repeats=repeats, device=device)
    except RuntimeError as err:  # a backend that does not take these inputs
        return {"case": name, "status": "refused", "error": str(err).splitlines()[0][:300]}
    return {"case": name, "status": "ok", "median_ms": float(np.median(times)), "min_ms": float(np.min(times))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="the IMDB byte file whose lengths the batch draws (default: every row full)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-new-shapes", dest="new_shapes", action="store_false", help="skip the new_shapes rows")
    parser.add_argument("--layouts", default="contiguous,model", help="comma-separated input layouts: contiguous, model (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file (make it with benchmarks/make_compact_data.py --only imdb)")
    unknown = sorted(set(args.layouts.split(",")) - set(LAYOUTS))
    if unknown:
        parser.error(f"--layouts: unknown {', '.join(unknown)}; choose from {', '.join(LAYOUTS)}")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    lengths = batch_lengths(args.batch, args.seq_len, args.data, args.seed)
    shape = (args.batch, args.heads, args.seq_len, args.head_dim)
    real = real_tokens(lengths, args.seq_len, device)
    bias = key_logit_bias(None, real, dtype)  # [B, 1, 1, N], -inf at padding: what the transformer passes SDPA

    def on_real(diff: torch.Tensor) -> float:
        """Largest absolute difference at real query positions (padded queries' outputs are not used)."""
        return float(diff[real[:, None, :, None].expand(shape)].abs().max())

    rows = []
    for layout in args.layouts.split(","):
        leaves, (q, k, v) = attention_inputs(layout, shape, device, dtype)
        with torch.no_grad():
            reference = {masked: _sdpa(q, k, v, bias if masked else None, 0.0, SDPBackend.MATH).float() for masked in (True, False)}
        cases = {f"{variant}/{name}": (variant, name, functools.partial(_sdpa, q, k, v, bias if masked else None, dropout, backend), masked, dropout)
                 for variant, (masked, dropout) in VARIANTS.items() for name, backend in BACKENDS.items()}  # fmt: skip
        if device.type == "cuda":
            cases["varlen"] = ("varlen", "flash", functools.partial(_varlen, q, k, v, lengths, real), True, 0.0)
        else:
            rows.append({"layout": layout, "variant": "varlen", "backend": "flash", "case": "varlen", "status": "skipped", "error": "varlen_attn needs CUDA"})
        for case, (variant, backend_name, fn, masked, dropout) in cases.items():
            row = {"layout": layout, "variant": variant, "backend": backend_name, **measure(f"{layout}/{case}", fn, leaves, device, args.repeats)}
            if row["status"] == "ok" and dropout == 0.0:
                with torch.no_grad():
                    row["max_abs_diff"] = on_real(fn().float() - reference[masked])
            rows.append(row)

    if args.new_shapes:
        rows += new_shape_rows(args, lengths, device, dtype)

    meta = {
        "description": "one exact-attention call, forward and backward, at LRA Text's transformer shape (benchmarks/sdpa_backends.py)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."), "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim,
        "seq_len": args.seq_len, "lengths": {"data": str(args.data) if args.data else None, "mean": float(lengths.float().mean()), "max": int(lengths.max())},
        "command": "python " + " ".join(["benchmarks/sdpa_backends.py", *(argv if argv is not None else sys.argv[1:])]),
    }  # fmt: skip
    write_json_atomic(args.out, {"meta": meta, "rows": rows})
    for r in rows:
        cost = f"{r['median_ms']:8.2f} ms" if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')[:100]}"
        print(f"{r['layout']:>10} {r['variant']:>13} {r['backend']:>9}  {cost}" + (f"  (max |diff| {r['max_abs_diff']:.2e})" if "max_abs_diff" in r else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
