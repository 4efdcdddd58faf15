"""Runtime settings of a CPU run: the C allocator (process-wide) and torch.compile's settings (per model).

glibc's malloc serves requests above a dynamic threshold (128 KiB at first) with fresh mmap()s and
gives the top of the heap back to the kernel when more than 128 KiB is free there. A training step
allocates and frees the same activation and gradient buffers (megabytes each) every step, so with
the defaults many of them come back as new pages that the kernel must fault in and zero, step after
step. `tune_malloc` keeps them in the heap instead: requests up to 32 MiB come from the heap
(M_MMAP_THRESHOLD) and up to 1 GiB of free heap top is kept (M_TRIM_THRESHOLD). The price is that
freed memory stays with the process (its peak, not its working set, is what it holds). Measured in
docs/RESULTS.md ("The parts"): it matters most for torch.compile'd steps.

`compile_model` is torch.compile with changes to inductor's CPU code, for that model only.
First, variances (BatchNorm's in a CIFAR network) over up to 131,072 elements, a batch of 128 at
32x32, are computed as a mean and then a sum of squared deviations (two passes over the
activations) instead of inductor's Welford update, used above 1,024 elements, whose per-element
divisions cost more than the second pass at these sizes. Both are numerically stable. Larger
reductions (ImageNet-size activations) keep inductor's choice: they were not measured. Measured
with benchmarks/compiled_step_variants.py (base against twostep, docs/RESULTS.md).

Then three fixes to the generated code (CODEGEN_FIXES; each one a hook, see _codegen_markers):

- plain_sums: float32 sums over 4,097 to 131,072 elements (BatchNorm's means, variances and
  gradient sums) accumulate in registers, as they do below that size, instead of through
  inductor's cascade-summation helper, whose running sum lives in a heap array that is loaded and
  stored for every element or vector: a chain of dependent memory round trips that made these
  reductions latency-bound. An accumulator (a SIMD lane, or a scalar in unvectorised code) then
  takes up to 131,072 float32 additions, an expected relative error of about sqrt(n) x 6e-8 =
  2e-5 at most, far below bf16 training's noise; larger sums keep the helper (not measured).
- half_stores: 16 bf16 values (a 16-channel channels_last row) are written with a plain 256-bit
  store instead of a masked 512-bit one (ResNet-20's first-stage BatchNorm kernels ran 1.3-1.7
  times faster with it).
- bool_masks: the bool masks a ReLU keeps for its backward are read and written with AVX-512 mask
  instructions instead of inductor's generic scalar loop (the kernels that do so ran 3-8 times
  faster).

The last two change no value (tests/test_speed_parts.py checks the step bit for bit); all the
results are checked against eager PyTorch there too. Measured with
benchmarks/compiled_step_variants.py (cmodel, plainsum, stores, masks) and
benchmarks/profile_step.py --fixes (docs/RESULTS.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems
TRIM_THRESHOLD = 2**30

_applied: str | None = None


def tune_malloc(mode: str = "auto") -> str:
    """Apply the allocator setting `mode` ("auto": tuned where glibc is the allocator; "off": leave
    it). Returns what is in force, for the run's hardware summary. Once tuned, a process stays tuned
    ("off" later does not undo it)."""
    global _applied
    if mode not in ("auto", "off"):
        raise ValueError(f"malloc mode must be auto or off, not {mode!r}")
    if _applied == "tuned":
        return _applied
    if mode == "off" or not sys.platform.startswith("linux"):
        _applied = "default"
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        _applied = "default"
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _applied = "tuned" if ok else "default"
    return _applied


def malloc_state() -> str:
    """"tuned" once tune_malloc has tuned this process, else "default"."""
    return _applied or "default"


TWO_STEP_VARIANCE_THRESHOLD = 128 * 32 * 32  # elements reduced; inductor's default is 1,024
PLAIN_SUM_MAX_ELEMENTS = 128 * 32 * 32  # larger float sums keep inductor's cascade summation


CODEGEN_FIXES = ("plain_sums", "half_stores", "bool_masks")

# The C++ the half_stores and bool_masks hooks emit ({ptr}: the first element's address; {value}:
# the vector; {n}: float vectors a tile; {inductor}: inductor's own line for the same store). Their
# hash is part of the markers' cache keys, so editing them never reuses code cached before the edit.
HALF_STORE_CPP = "_mm256_storeu_si256(reinterpret_cast<__m256i*>({ptr}), _mm512_castsi512_si256({value}));"
# inductor's masks are canonical (every lane all ones or all zeros), so a lane's sign bit is its
# value; bools are written as the bytes 1 and 0, as inductor writes them
MASK_STORE_CPP = (
    "[&](auto m_) {{ if constexpr (std::is_same_v<decltype(m_), at::vec::VecMask<float,{n}>>) {{ "
    "const at::vec::VectorizedN<float,{n}> v_ = m_; for (int i_ = 0; i_ < {n}; i_++) "
    "_mm_storeu_si128(reinterpret_cast<__m128i*>({ptr}) + i_, "
    "_mm_maskz_mov_epi8(_mm512_movepi32_mask(_mm512_castps_si512(v_[i_])), _mm_set1_epi8(1))); "
    "}} else {{ {inductor} }} }}({value});")
MASK_LOAD_CPP = (
    "[&]() {{ at::vec::VectorizedN<float,{n}> v_; for (int i_ = 0; i_ < {n}; i_++) "
    "v_[i_] = _mm512_castsi512_ps(_mm512_movm_epi32(_mm_test_epi8_mask(_mm_loadu_si128("
    "reinterpret_cast<const __m128i*>({ptr}) + i_), _mm_set1_epi8(-1)))); "
    "return at::vec::VecMask<float,{n}>(v_); }}()")


def _template_hash(*templates: str) -> str:
    import hashlib
    return hashlib.sha256("\0".join(templates).encode()).hexdigest()[:16]


def _codegen_markers():
    """The marker pass classes of the code-generation hooks below, by name (CODEGEN_FIXES),
    installing the hooks on first use; a name is missing where this torch's inductor lacks the
    method its hook wraps.

    Each hook wraps one of inductor's CPU code-generation methods (torch 2.14) and changes the code
    only in compilations whose post-grad passes include its marker; other compilations get
    inductor's own code. A marker changes nothing in the graph; as a CustomGraphPass its uuid()
    enters inductor's cache keys, so cached code of one kind is never served to a compilation that
    wants the other.

    plain_sums (`CppKernel.need_use_acc_helper`): a float32 sum over 4,097 to PLAIN_SUM_MAX_ELEMENTS
    elements accumulates in registers instead of through the cascade-summation helper.

    half_stores (`CppVecKernel._get_store_line`): where 512-bit code stores 16 contiguous bf16 or
    fp16 values (a 16-lane float tile converted down: channels_last activations with 16 channels),
    inductor writes half of a 512-bit register with a masked store; this stores the same 32 bytes
    with a plain 256-bit store. (Stores that do not go through `_get_store_line`, those of
    transposed tiles and some reductions' results, keep the masked store.)

    bool_masks (`CppVecKernel._get_vec_load_line` and `_get_store_line`): a bool tensor (the mask
    of a ReLU kept for its backward) is loaded into, and stored from, a float mask vector by
    inductor's generic VecMask code, a scalar loop over the lanes with a run-time count; with
    512-bit code and whole 16-lane tiles this uses AVX-512 mask instructions instead (16 bytes per
    16 lanes, the same bytes: 1 for true, 0 for false).

    benchmarks/profile_step.py --fixes shows what each changes, kernel by kernel."""
    from torch._inductor.codegen import cpp as cpp_codegen

    markers = getattr(cpp_codegen, "torchcls_markers", None)
    if markers is not None:  # installed already (this import or an earlier one)
        return markers

    import torch
    import torch._inductor.config as inductor_config
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_custom_graph_passes
    from torch._inductor.virtualized import V

    def marker(name, version):
        class Marker(CustomGraphPass):
            def __call__(self, graph):
                return None

            def uuid(self):
                return f"torchcls.{name}.{version}"

        Marker.__name__ = Marker.__qualname__ = "".join(w.title() for w in name.split("_"))
        return Marker

    def active(name):
        cls = markers.get(name)
        return cls is not None and any(
            isinstance(p, cls) for p in get_custom_graph_passes(inductor_config.post_grad_custom_post_pass))

    markers = {}
    kernel = getattr(cpp_codegen, "CppKernel", None)
    need_acc = getattr(kernel, "need_use_acc_helper", None)
    if need_acc is not None:
        markers["plain_sums"] = marker("plain_float_sums", f"v1.{PLAIN_SUM_MAX_ELEMENTS}")

        def need_use_acc_helper(self, reduction_type, dtype, use_scalar):
            if reduction_type == "sum" and self.call_ranges is not None and active("plain_sums"):
                size = math.prod(self.call_ranges[self.reduction_depth:])  # as inductor computes it
                if V.graph.sizevars.statically_known_leq(size, PLAIN_SUM_MAX_ELEMENTS):
                    return False
            return need_acc(self, reduction_type, dtype, use_scalar)

        kernel.need_use_acc_helper = need_use_acc_helper

    vec_kernel = getattr(cpp_codegen, "CppVecKernel", None)
    store_line = getattr(vec_kernel, "_get_store_line", None)
    load_line = getattr(vec_kernel, "_get_vec_load_line", None)
    if store_line is not None and load_line is not None and all(
            hasattr(cpp_codegen, n) for n in ("cexpr_index", "IndentedBuffer")):
        markers["half_stores"] = marker("plain_half_stores", _template_hash(HALF_STORE_CPP))
        markers["bool_masks"] = marker("avx512_bool_masks", _template_hash(MASK_STORE_CPP, MASK_LOAD_CPP))

        def whole_tiles(self):
            """512-bit code over whole tiles of 16-lane float vectors: how many a tile, else 0."""
            if self.vec_isa.bit_width() != 512 or self.tail_size or self.num_elems % 16:
                return 0
            return self.num_elems // 16

        def _get_store_line(self, value, var, index, dtype, accu_store=False):
            code = store_line(self, value, var, index, dtype, accu_store)
            if (accu_store or not isinstance(value, cpp_codegen.CppCSEVariable)
                    or self._try_get_const_stride(index, self.itervars[self.tiling_idx]) != 1):
                return code
            ptr = f"{var} + {cpp_codegen.cexpr_index(index)}"
            n = whole_tiles(self)
            if dtype in (torch.bfloat16, torch.float16) and n == 1 and active("half_stores"):
                line = HALF_STORE_CPP.format(ptr=ptr, value=value)
            elif dtype == torch.bool and n and active("bool_masks"):
                # a float mask of n vectors; other mask types (none seen in these networks) keep
                # inductor's store, chosen when the C++ is compiled
                inductor = code.getvalue().strip().replace(f"{value}.", "m_.", 1)
                line = MASK_STORE_CPP.format(n=n, ptr=ptr, value=value, inductor=inductor)
            else:
                return code
            plain = cpp_codegen.IndentedBuffer()
            plain.writeline(line)
            return plain

        def _get_vec_load_line(self, var, index, dtype, load_mask=None):
            line = load_line(self, var, index, dtype, load_mask)
            n = whole_tiles(self)
            if dtype != torch.bool or not n or not active("bool_masks"):
                return line
            ptr = f"{var} + {cpp_codegen.cexpr_index(index)}" if index != 0 else var
            return MASK_LOAD_CPP.format(n=n, ptr=ptr)

        vec_kernel._get_store_line = _get_store_line
        vec_kernel._get_vec_load_line = _get_vec_load_line
    cpp_codegen.torchcls_markers = markers
    return markers


def compile_options(device_type: str = "cpu", fixes=CODEGEN_FIXES) -> dict:
    """The inductor options compile_model passes for `device_type` (empty off the CPU): the
    two-pass variance threshold, and the markers of the code-generation `fixes` (names from
    CODEGEN_FIXES), added to any post-grad passes already configured, which keep running."""
    if device_type != "cpu":
        return {}
    unknown = set(fixes) - set(CODEGEN_FIXES)
    if unknown:
        raise ValueError(f"unknown code-generation fixes {sorted(unknown)}; known: {CODEGEN_FIXES}")
    options = {"cpp.use_two_step_variance_threshold": TWO_STEP_VARIANCE_THRESHOLD}
    available = _codegen_markers()
    wanted = [available[k]() for k in CODEGEN_FIXES if k in fixes and k in available]
    if wanted:
        import torch._inductor.config as inductor_config
        from torch._inductor.custom_graph_pass import get_custom_graph_passes

        options["post_grad_custom_post_pass"] = (
            *get_custom_graph_passes(inductor_config.post_grad_custom_post_pass), *wanted)
    return options


def compile_model(model, device_type: str = "cpu", fixes=CODEGEN_FIXES):
    """torch.compile(model), on a CPU with the settings above (the two-pass variance, and the
    code-generation fixes named in `fixes`, all by default), scoped to this model's compilation
    (forward and backward); other compilations in the process are unaffected."""
    import torch
    options = compile_options(device_type, fixes)
    return torch.compile(model, options=options) if options else torch.compile(model)
