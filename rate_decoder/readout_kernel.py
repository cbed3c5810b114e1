"""A fused CPU kernel for the readout's product: gather, dropout and the linear layer in one pass over each row.

The readout is a linear layer of ~25k inputs and 10 outputs trained by Adam at batch 64 on cached
features (docs/algorithm.md §6.2). Written as tensor operations, each step gathers its 64 rows, widens
them from fp16, multiplies them by a dropout mask and makes two skinny products: five passes over a
6 MB batch, each bound by memory, for 31 MFLOP of products per pass. Here one C function reads each
row's fp16 (or fp32) features once per product, applies the mask from its bits and accumulates into
the 10 outputs while the row's slice is in the first-level cache (:func:`gathered_matmul`); its
gradient, the weight gradient, makes the same pass again. Both split the features into chunks of
:data:`CHUNK` and sum the chunks in a fixed order, so the result does not depend on the number of threads.

The kernel is compiled once per machine with the system's C compiler (``cc``, ``-O3 -march=native``)
into ``$SOFTHEBB_KERNEL_CACHE`` (default ``~/.cache/softhebb/kernels``) and loaded with ``ctypes``. Where
it cannot be built, or ``SOFTHEBB_READOUT_KERNEL=torch`` is set, the readout uses tensor operations:
the same masks and the same rule, other summation orders.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

#: features per chunk: a chunk of one row (2 KB in fp32) and its weights (K x 2 KB) stay in the L1/L2 cache
CHUNK = 512
#: the kernel keeps K x CHUNK accumulators per chunk; a head with more outputs is a proper matrix product
MAX_OUTPUTS = 64

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

#define CHUNK %(chunk)d
#define MAXK %(max_outputs)d
#define TILE 8                    /* floats per vector; rows per pass of the gradient */
#define PREFETCH_ROWS 2           /* rows ahead (an A/B on an AMD EPYC: the forward pass 1.3 -> 0.85 ms a batch) */
#define KTILE 12                  /* outputs per pass of the product: 12 sums and a row fill 13 of 16 registers */

typedef float v8 __attribute__((vector_size(32)));
#define V(p) (*(v8 *)(p))         /* p: a float pointer aligned to 32 bytes */

typedef struct {
    const void *x; int half; int64_t n_features; const int64_t *idx; int64_t rows;
    const uint8_t *bits; int64_t start; const float *w; const float *g; int64_t k;
    float *out; int parts; int tid; int backward;
} job_t;

static float scales[256][8] __attribute__((aligned(32)));   /* byte b: the 8 dropout scales (0 or 2) of its bits */

/* row i's features f0 .. f0+n-1 as floats, times its dropout scales where bits are given, zero-padded to npad */
static void load_row(const job_t *j, int64_t i, int64_t f0, int64_t n, int64_t npad, float *out) {
    int64_t r = j->idx ? j->idx[i] : i, l = 0;
    uint64_t b0 = (uint64_t)(j->start + i) * (uint64_t)j->n_features + (uint64_t)f0;
    const uint8_t *b = j->bits ? j->bits + (b0 >> 3) : 0;
    if (j->half) {
        const _Float16 *p = (const _Float16 *)j->x + r * j->n_features + f0;
#ifdef __F16C__
        if (!b)
            for (; l + 8 <= n; l += 8) _mm256_store_ps(out + l, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + l))));
        else if ((b0 & 7) == 0)       /* whole bytes: 8 scales from one table row */
            for (; l + 8 <= n; l += 8)
                V(out + l) = (v8)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + l))) * V(scales[b[l >> 3]]);
#endif
        for (int64_t m = l; m < n; m++) out[m] = (float)p[m];
    } else {
        memcpy(out, (const float *)j->x + r * j->n_features + f0, n * sizeof(float));
        if (b && (b0 & 7) == 0)
            for (; l + 8 <= n; l += 8) V(out + l) *= V(scales[b[l >> 3]]);
    }
    if (b)
        for (; l < n; l++) {
            uint64_t q = b0 + (uint64_t)l;
            out[l] *= scales[j->bits[q >> 3]][q & 7];
        }
    for (l = n; l < npad; l++) out[l] = 0.0f;
}

/* ask for row i's features f0 .. f0+n-1 ahead of their use: the rows are random, so the hardware
   prefetcher would only find each 1-2 KB run after its first cache lines had missed */
static void prefetch_row(const job_t *j, int64_t i, int64_t f0, int64_t n) {
    int64_t r = j->idx ? j->idx[i] : i, size = j->half ? 2 : 4;
    const char *p = (const char *)j->x + (r * j->n_features + f0) * size;
    for (int64_t o = 0; o < n * size; o += 64) __builtin_prefetch(p + o, 0, 0);
}

static float lanes_sum(v8 a) {    /* a fixed order, whatever the compiler */
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static void *work(const void *arg) {
    const job_t *j = (const job_t *)arg;
    int64_t F = j->n_features, K = j->k, chunks = (F + CHUNK - 1) / CHUNK;
    static_assert(CHUNK %% TILE == 0, "a chunk holds whole vectors");
    /* 170 KB of buffers on the heap: a thread's stack may be small (128 KB on musl) */
    float (*buf)[CHUNK] = 0, (*wc)[CHUNK] = 0;
    if (posix_memalign((void **)&buf, 32, sizeof(float[TILE][CHUNK])) != 0) return (void *)1;
    if (posix_memalign((void **)&wc, 32, sizeof(float[MAXK + KTILE][CHUNK])) != 0) { free(buf); return (void *)1; }
    for (int64_t c = j->tid; c < chunks; c += j->parts) {
        int64_t f0 = c * CHUNK, n = F - f0 < CHUNK ? F - f0 : CHUNK, npad = (n + TILE - 1) / TILE * TILE;
        if (!j->backward) {           /* out[c][i][k] = sum over the chunk of x[i] * scale * w[k] */
            for (int64_t k = 0; k < K + KTILE; k++) {
                int64_t m = k < K ? n : 0;
                memcpy(wc[k], j->w + k * F + f0, m * sizeof(float));
                memset(wc[k] + m, 0, (npad - m) * sizeof(float));
            }
            for (int64_t i = 0; i < j->rows; i++) {
                if (i + PREFETCH_ROWS < j->rows) prefetch_row(j, i + PREFETCH_ROWS, f0, n);
                load_row(j, i, f0, n, npad, buf[0]);
                for (int64_t k0 = 0; k0 < K; k0 += KTILE) {
                    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0};
                    v8 a6 = {0}, a7 = {0}, a8 = {0}, a9 = {0}, a10 = {0}, a11 = {0};
                    for (int64_t f = 0; f < npad; f += TILE) {
                        v8 x = V(buf[0] + f);
                        a0 += x * V(wc[k0] + f); a1 += x * V(wc[k0 + 1] + f); a2 += x * V(wc[k0 + 2] + f);
                        a3 += x * V(wc[k0 + 3] + f); a4 += x * V(wc[k0 + 4] + f); a5 += x * V(wc[k0 + 5] + f);
                        a6 += x * V(wc[k0 + 6] + f); a7 += x * V(wc[k0 + 7] + f); a8 += x * V(wc[k0 + 8] + f);
                        a9 += x * V(wc[k0 + 9] + f); a10 += x * V(wc[k0 + 10] + f); a11 += x * V(wc[k0 + 11] + f);
                    }
                    float s[KTILE] = {lanes_sum(a0), lanes_sum(a1), lanes_sum(a2), lanes_sum(a3), lanes_sum(a4),
                                      lanes_sum(a5), lanes_sum(a6), lanes_sum(a7), lanes_sum(a8), lanes_sum(a9),
                                      lanes_sum(a10), lanes_sum(a11)};
                    for (int t = 0; t < KTILE && k0 + t < K; t++) j->out[(c * j->rows + i) * K + k0 + t] = s[t];
                }
            }
        } else {                      /* out[k][f] = sum over rows, in order, of g[i][k] * x[i][f] * scale */
            for (int64_t k = 0; k < K; k++) memset(wc[k], 0, npad * sizeof(float));
            for (int64_t i0 = 0; i0 < j->rows; i0 += TILE) {
                int64_t m = j->rows - i0 < TILE ? j->rows - i0 : TILE;
                for (int64_t i = 0; i < TILE; i++)
                    if (i < m) load_row(j, i0 + i, f0, n, npad, buf[i]); else memset(buf[i], 0, npad * sizeof(float));
                for (int64_t k = 0; k < K; k++) {
                    float g[TILE] = {0};
                    for (int64_t i = 0; i < m; i++) g[i] = j->g[(i0 + i) * K + k];
                    for (int64_t f = 0; f < npad; f += TILE) {
                        v8 s = V(wc[k] + f);
                        s += g[0] * V(buf[0] + f); s += g[1] * V(buf[1] + f); s += g[2] * V(buf[2] + f);
                        s += g[3] * V(buf[3] + f); s += g[4] * V(buf[4] + f); s += g[5] * V(buf[5] + f);
                        s += g[6] * V(buf[6] + f); s += g[7] * V(buf[7] + f);
                        V(wc[k] + f) = s;
                    }
                }
            }
            for (int64_t k = 0; k < K; k++) memcpy(j->out + k * F + f0, wc[k], n * sizeof(float));
        }
    }
    free(buf);
    free(wc);
    return NULL;
}

/* Chunks tid, tid + parts, ... of the product (out: chunks x rows x k partial sums) or of its gradient
   (out: the k x n_features weight gradient); the caller runs the parts on its threads. */
int softhebb_gathered(const void *x, int half, int64_t n_features, const int64_t *idx, int64_t rows,
                      const uint8_t *bits, int64_t start, const float *w, const float *g, int64_t k,
                      float *out, int parts, int tid, int backward) {
    if (k > MAXK || k < 1 || parts < 1 || tid < 0 || tid >= parts) return 1;
    job_t j = {x, half, n_features, idx, rows, bits, start, w, g, k, out, parts, tid, backward};
    return work(&j) == NULL ? 0 : 2;
}

/* byte b: the 8 dropout scales (0 or 2) of its bits, lowest bit first; called once, when the library loads */
__attribute__((constructor)) static void fill_scales(void) {
    for (int b = 0; b < 256; b++) for (int t = 0; t < 8; t++) scales[b][t] = (float)((b >> t) & 1) * 2.0f;
}
""" % {"chunk": CHUNK, "max_outputs": MAX_OUTPUTS}

_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]
_library: ctypes.CDLL | None = None
_tried = False


def cache_dir() -> Path:
    """Where compiled kernels are kept (``$SOFTHEBB_KERNEL_CACHE`` or ``~/.cache/softhebb/kernels``)."""
    return Path(os.environ.get("SOFTHEBB_KERNEL_CACHE", Path.home() / ".cache" / "softhebb" / "kernels"))


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags: a kernel built with ``-march=native`` runs only there."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def _build(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        source, library = Path(tmp) / "kernel.c", Path(tmp) / path.name
        source.write_text(SOURCE)
        subprocess.run(["cc", *_FLAGS, str(source), "-o", str(library)], check=True, capture_output=True, timeout=120)
        os.replace(library, path)  # atomic: a concurrent build or a reader never sees half a file


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; ``None`` where it cannot be (a warning says why)."""
    global _library, _tried
    if _tried:
        return _library
    _tried = True
    key = hashlib.sha256((SOURCE + " ".join(_FLAGS) + _cpu_signature()).encode()).hexdigest()[:16]
    path = cache_dir() / f"readout_{key}.so"
    try:
        if not path.exists():
            _build(path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        warnings.warn(f"the readout's C kernel could not be built ({err} {detail.decode(errors='replace')[:200]}); "
                      "the readout uses tensor operations, which are slower on CPU", RuntimeWarning, stacklevel=2)
        return None
    lib.softhebb_gathered.restype = ctypes.c_int
    lib.softhebb_gathered.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                      ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    _library = lib
    return lib


def usable(features, n_outputs: int, device=None) -> bool:
    """Whether :func:`gathered_matmul` can take these features: a contiguous 2-D fp16 or fp32 tensor on the CPU,
    a head of at most :data:`MAX_OUTPUTS` outputs, a CPU run, a kernel that builds, and
    ``SOFTHEBB_READOUT_KERNEL`` not set to ``torch``."""
    return (os.environ.get("SOFTHEBB_READOUT_KERNEL", "c") != "torch"
            and isinstance(features, Tensor) and features.dim() == 2 and features.device.type == "cpu"
            and features.dtype in (torch.float16, torch.float32) and features.is_contiguous()
            and n_outputs <= MAX_OUTPUTS and (device is None or torch.device(device).type == "cpu")
            and library() is not None)


def _call(features: Tensor, idx: Tensor | None, rows: int, bits: Tensor | None, start: int, weight: Tensor,
          grad: Tensor | None, out: Tensor, parts: int) -> None:
    """The kernel over every chunk, in ``parts`` parts: one in this thread, the others in
    :data:`_workers` (``ctypes`` releases the GIL during the call; threads that live on stay on their cores,
    where a thread started per call would not get to run on another core before it ends)."""
    args = (features.data_ptr(), int(features.dtype == torch.float16), features.shape[1],
            None if idx is None else idx.data_ptr(), rows, None if bits is None else bits.data_ptr(), start,
            weight.data_ptr(), None if grad is None else grad.data_ptr(), weight.shape[0], out.data_ptr())
    backward = int(grad is not None)
    kernel = library().softhebb_gathered
    others = [_pool(parts - 1).submit(kernel, *args, parts, tid, backward) for tid in range(1, parts)]
    status = [kernel(*args, parts, 0, backward)] + [f.result() for f in others]
    if any(status):
        raise RuntimeError("the readout kernel refused its arguments")


_workers: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, size, pool)


def _pool(size: int) -> ThreadPoolExecutor:
    """A pool of at least ``size`` threads, kept for the next calls. A forked child starts its own: it
    inherits the pool object but not its threads, and work handed to it would wait forever."""
    global _workers
    if _workers is None or _workers[0] != os.getpid() or _workers[1] < size:
        _workers = (os.getpid(), size, ThreadPoolExecutor(max_workers=size, thread_name_prefix="readout-kernel"))
    return _workers[2]


class _GatheredMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, features: Tensor, idx: Tensor | None, bits: Tensor | None, start: int,
                parts: int):
        weight = weight.detach().contiguous()
        rows = len(features) if idx is None else len(idx)
        chunks = -(-features.shape[1] // CHUNK)
        partial = torch.empty(chunks, rows, weight.shape[0])
        _call(features, idx, rows, bits, start, weight, None, partial, parts)
        ctx.save_for_backward(weight)
        ctx.inputs = (features, idx, bits, start, rows, parts)
        return partial.sum(0)  # in chunk order: the same sum with any number of threads

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        features, idx, bits, start, rows, parts = ctx.inputs
        grad_weight = torch.empty_like(weight)
        _call(features, idx, rows, bits, start, weight, grad.contiguous().float(), grad_weight, parts)
        return grad_weight, None, None, None, None, None


def gathered_matmul(weight: Tensor, features: Tensor, idx: Tensor | None = None, bits: Tensor | None = None,
                    start: int = 0, threads: int | None = None) -> Tensor:
    """``(scale * features[idx].float()) @ weight.T``, differentiable in ``weight``.

    ``idx``: int64 row positions (``None``: every row). ``bits``: the dropout mask's bytes, bit ``r * F + f``
    (lowest bit first) keeping feature ``f`` of the batch's row ``r`` at scale 2 and dropping it otherwise;
    rows of this call are the batch's rows ``start, start + 1, ...`` (a data-parallel rank's shard).
    ``None``: no dropout. ``threads``: how many threads share the work (default ``torch.get_num_threads()``);
    the result does not depend on it.
    """
    if idx is not None:
        idx = idx.to(torch.int64).contiguous()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(features)):
            raise IndexError(f"row positions outside 0..{len(features) - 1}")
    if bits is not None:
        rows = len(features) if idx is None else len(idx)
        needed = -(-(start + rows) * features.shape[1] // 8)
        if bits.dtype != torch.uint8 or not bits.is_contiguous() or bits.numel() < needed:
            raise ValueError(f"the dropout bits must be {needed} contiguous bytes or more")
    return _GatheredMatmul.apply(weight, features, idx, bits, start, max(1, threads or torch.get_num_threads()))
