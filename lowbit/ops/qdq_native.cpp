// lowbit's native CPU kernels for quantize-dequantize (built and loaded by lowbit/ops/native.py).
//
// Each function mirrors, operation for operation, the pure-torch reference in lowbit/formats/cast.py
// and lowbit/ops/scaling.py: the same IEEE fp32 operations (divisions stay divisions, no FMA
// contraction: built with -ffp-contract=off, never -ffast-math) and the same integer arithmetic on
// fp32 encodings, so the results are bit-identical to the eager path (tests/test_native.py checks it).
//
// What they add is the memory schedule: explicit vectors as wide as the ISA level's registers (GCC
// vector extensions: 16 lanes for AVX-512, 8 for AVX2, 4 for SSE4.2 and NEON; see qdq_native_vec.h and
// native_build.py), block scales computed one vector of blocks at a time while the blocks sit in L1
// (for NVFP4, the block amaxes of the first pass are kept for the second), non-temporal stores for
// outputs larger than the last-level cache, and torch's own OpenMP threads.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "qdq_native_threads.h"
#include "qdq_native_vec.h"

namespace {

inline float range_finite_amax(const float* x, int64_t b, int64_t e) {
    // max of the |x| bit patterns below Inf's (finite values order like their bits); 4 accumulators
    vi m0 = {}, m1 = {}, m2 = {}, m3 = {};
    auto fin = [](vf v) { vi a = bits(v) & 0x7FFFFFFF; return a < 0x7F800000 ? a : 0; };
    int64_t i = b;
    for (; i + 4 * W <= e; i += 4 * W) {
        vi a0 = fin(ld(x + i)), a1 = fin(ld(x + i + W)), a2 = fin(ld(x + i + 2 * W)), a3 = fin(ld(x + i + 3 * W));
        m0 = a0 > m0 ? a0 : m0;
        m1 = a1 > m1 ? a1 : m1;
        m2 = a2 > m2 ? a2 : m2;
        m3 = a3 > m3 ? a3 : m3;
    }
    for (; i < e; i += W) {
        vi a = fin(i + W <= e ? ld(x + i) : ld_part(x + i, (int)(e - i)));
        m0 = a > m0 ? a : m0;
    }
    m0 = m0 > m1 ? m0 : m1;
    m2 = m2 > m3 ? m2 : m3;
    m0 = m0 > m2 ? m0 : m2;
    int32_t r = 0;
    for (int l = 0; l < W; ++l) r = m0[l] > r ? m0[l] : r;
    return f_of(r);
}

// The largest of ``range_max(begin, end)`` (values >= 0) over the threads' ranges of [0, n).
template <class F>
float parallel_max(int nthreads, int64_t n, F&& range_max) {
    std::vector<float> part(nthreads, 0.0f);
    parallel(nthreads, n, W, [&](int t, int64_t b, int64_t e) { part[t] = range_max(b, e); });
    float m = 0.0f;
    for (float v : part) m = v > m ? v : m;
    return m;
}

float finite_amax(const float* x, int64_t n, int nthreads) {
    return parallel_max(nthreads, n, [&](int64_t b, int64_t e) { return range_finite_amax(x, b, e); });
}

// ---- schedule flags (the ``sched`` argument) --------------------------------------------------------
constexpr int NT = 1;          // non-temporal stores

// ---- per-tensor / direct: one element pass, optionally after an amax pass ------------------------
template <int KIND, int SCALED, int MASK>
void elem_range(const float* x, float* out, uint8_t* mask, int64_t b, int64_t e, const Elem& p, float s,
                bool nt) {
    const float lo = SCALED ? p.lo * s : p.lo, hi = SCALED ? p.hi * s : p.hi;
    const Elem pp = p;
    auto step = [&](int64_t cb, int64_t ce) {
        int64_t i = cb;
        for (; i + W <= ce; i += W) {
            vf v = ld(x + i);
            vf q = SCALED ? cast<KIND>(v / s, pp) * s : cast<KIND>(v, pp);
            st(out + i, q, nt);
            if (MASK) st_mask(mask + i, (v >= lo) & (v <= hi), W);
        }
        if (i < ce) {
            int k = (int)(ce - i);
            vf v = ld_part(x + i, k);
            vf q = SCALED ? cast<KIND>(v / s, pp) * s : cast<KIND>(v, pp);
            st_part(out + i, q, k);
            if (MASK) st_mask(mask + i, (v >= lo) & (v <= hi), k);
        }
    };
    step(b, e);
    fence(nt);
}

template <int KIND, int SCALED>
void elem_range_m(const float* x, float* out, uint8_t* mask, int64_t b, int64_t e, const Elem& p, float s,
                  bool nt) {
    if (mask) elem_range<KIND, SCALED, 1>(x, out, mask, b, e, p, s, nt);
    else elem_range<KIND, SCALED, 0>(x, out, mask, b, e, p, s, nt);
}

template <int KIND>
void tensor_kernel(const float* x, float* out, uint8_t* mask, int64_t n, const Elem& p, int mode, float s,
                   float fmt_max, int pow2, int nthreads, int sched) {
    if (mode == 2) s = amax_scale(splat(finite_amax(x, n, nthreads)), fmt_max, pow2)[0];
    bool nt = sched & NT;
    parallel(nthreads, n, W, [&](int, int64_t b, int64_t e) {
        if (mode == 0) elem_range_m<KIND, 0>(x, out, mask, b, e, p, 1.0f, nt);
        else elem_range_m<KIND, 1>(x, out, mask, b, e, p, s, nt);
    });
}

// ---- blocks: MX, NVFP4, groups --------------------------------------------------------------------
// One level of a transpose-reduction: C's segments of 2h lanes hold A's and B's segments folded in half.
template <int H>
LB_INLINE vi fold(vi a, vi b) {
    vi p1, p2;
    for (int l = 0; l < W; ++l) {
        int base = l / (2 * H) * (2 * H), r = l - base;
        p1[l] = r < H ? base + r : W + base + r - H;
        p2[l] = r < H ? base + r + H : W + base + r;
    }
    vi x = __builtin_shuffle(a, b, p1), y = __builtin_shuffle(a, b, p2);
    return x > y ? x : y;
}

// One level of folds: the 2H vectors of m become H (in place).
template <int H>
__attribute__((always_inline)) inline vi fold_tree(vi* m) {
    for (int j = 0; j < H; ++j) m[j] = fold<H>(m[2 * j], m[2 * j + 1]);
    if constexpr (H == 1) return m[0];
    else return fold_tree<H / 2>(m);
}

// lane j of the result = the largest lane of m[j] (signed int32 max): W - 1 shuffle pairs for W vectors
// (m is overwritten)
__attribute__((always_inline)) inline vi hmax_lanes(vi* m) {
    vi r = fold_tree<W / 2>(m), rev;                   // lanes in bit-reversed block order
    for (int l = 0; l < W; ++l) {
        int v = 0;
        for (int b = 1, k = W / 2; b < W; b <<= 1, k >>= 1) v |= (l & b) ? k : 0;
        rev[l] = v;
    }
    return __builtin_shuffle(r, rev);
}

LB_INLINE vf lane(vf v, int64_t j) { return __builtin_shuffle(v, splati((int32_t)j)); }

// Amaxes of the blocks [g0, g1) (at most W) as the |x| bit patterns, one lane per block: NaN > Inf >
// every finite value, so a block holding NaN or Inf has amax >= Inf's pattern. FINITE (groups): the
// finite amax instead. ``fin`` (if given) accumulates the finite amax of every element.
template <int FINITE, int BS>
LB_INLINE vi group_amax(const float* x, int64_t g0, int64_t g1, int64_t bs_, vi* fin) {
    const int64_t bs = BS ? BS : bs_;
    vi m[W];
    for (int64_t j = g0; j < g0 + W; ++j) {
        vi mj = {};
        if (j < g1) {
            const float* xb = x + j * bs;
            for (int64_t i = 0; i < bs; i += W) {
                vi a = bits(i + W <= bs ? ld(xb + i) : ld_part(xb + i, (int)(bs - i))) & 0x7FFFFFFF;
                vi af = a < 0x7F800000 ? a : 0;
                if (fin) *fin = af > *fin ? af : *fin;
                a = FINITE ? af : a;
                mj = a > mj ? a : mj;
            }
        }
        m[j - g0] = mj;
    }
    return hmax_lanes(m);
}

// Runs ``fn(g0, g1)`` over the groups of W blocks in [b0, b1).
template <class F>
inline void for_groups(int64_t b0, int64_t b1, F&& fn) {
    for (int64_t g0 = b0; g0 < b1; g0 += W) fn(g0, std::min(b1, g0 + W));
}

// First pass of a two-pass block format (NVFP4 with its tensor scale): every block's amax into
// ``amaxes`` (so the second pass does not recompute it), and the range's finite amax.
template <int BS>
float block_amax_range(const float* x, int32_t* amaxes, int64_t b0, int64_t b1, int64_t bs) {
    vi fin = {};
    for_groups(b0, b1, [&](int64_t g0, int64_t g1) {
        vi ab = group_amax<0, BS>(x, g0, g1, bs, &fin);
        if (g1 - g0 == W) std::memcpy(amaxes + g0, &ab, sizeof ab);
        else for (int64_t j = g0; j < g1; ++j) amaxes[j] = ab[j - g0];
    });
    int32_t r = 0;
    for (int l = 0; l < W; ++l) r = fin[l] > r ? fin[l] : r;
    return f_of(r);
}

// W blocks at a time: their amaxes into one vector, their W scales computed as one vector, then
// the elements quantized while the blocks are still in L1. MODE 0: MX, 1: NVFP4, 2: groups.
template <int KIND, int MODE, int MASK, int BS>
void block_range(const float* x, float* out, uint8_t* mask, const int32_t* amaxes, int64_t b0, int64_t b1,
                 int64_t bs_, const Elem& p, const Blk& bk, float st_, bool nt) {
    const int64_t bs = BS ? BS : bs_;                          // BS > 0: the block size as a constant
    const Elem pp = p;
    const Blk bb = bk;
    const bool ntb = nt && bs % W == 0;
    for_groups(b0, b1, [&](int64_t g0, int64_t g1) {
        vi ab;
        if (amaxes && g1 - g0 == W) {
            std::memcpy(&ab, amaxes + g0, sizeof ab);
        } else if (amaxes) {
            ab = vi{};
            for (int64_t j = g0; j < g1; ++j) ab[j - g0] = amaxes[j];
        } else {
            ab = group_amax<MODE == 2, BS>(x, g0, g1, bs, nullptr);
        }
        vf amax = flt(ab);
        vi bad = ab >= 0x7F800000;
        vf sc, safe, mul = {};
        if (MODE == 0) {
            sc = mx_scale(amax, bad, bb);
            safe = sc > 0 ? sc : splat(1.0f);
            mul = 1.0f / safe;                                  // a power of two: x * (1/s) == x / s exactly
        } else if (MODE == 1) {
            sc = nv_scale(amax, bad, st_, bb);
            safe = sc > 0 ? sc : splat(1.0f);
        } else {
            sc = amax_scale(amax, bb.fmt_max, bb.pow2);
            safe = sc;
        }
        vf lov = pp.lo * sc, hiv = pp.hi * sc;
        auto one_block = [&](int64_t j) {                      // j: block index within the group
            const float* xb = x + (g0 + j) * bs;
            float* ob = out + (g0 + j) * bs;
            vf s = lane(sc, j), f = MODE == 0 ? lane(mul, j) : lane(safe, j);
            vf lo = lane(lov, j), hi = lane(hiv, j);
            for (int64_t i = 0; i < bs; i += W) {
                int k = (int)std::min<int64_t>(W, bs - i);
                vf v = k == W ? ld(xb + i) : ld_part(xb + i, k);
                vf y = MODE == 0 ? v * f : v / f;
                vf q = cast<KIND>(y, pp) * s;
                if (k == W) st(ob + i, q, ntb); else st_part(ob + i, q, k);
                if (MASK) st_mask(mask + (g0 + j) * bs + i, (v >= lo) & (v <= hi), k);
            }
        };
        if (g1 - g0 == W) {
            for (int j = 0; j < W; ++j) one_block(j);          // a constant trip count: unrolled
        } else {
            for (int64_t j = 0; j < g1 - g0; ++j) one_block(j);
        }
    });
    fence(nt);
}

template <int KIND, int MODE>
void block_range_m(const float* x, float* out, uint8_t* mask, const int32_t* am, int64_t b0, int64_t b1, int64_t bs,
                   const Elem& p, const Blk& bk, float st_, bool nt) {
    if (mask) block_range<KIND, MODE, 1, 0>(x, out, mask, am, b0, b1, bs, p, bk, st_, nt);
    else if (bs == 16) block_range<KIND, MODE, 0, 16>(x, out, mask, am, b0, b1, bs, p, bk, st_, nt);
    else if (bs == 32) block_range<KIND, MODE, 0, 32>(x, out, mask, am, b0, b1, bs, p, bk, st_, nt);
    else block_range<KIND, MODE, 0, 0>(x, out, mask, am, b0, b1, bs, p, bk, st_, nt);
}

template <int KIND>
void block_kernel(const float* x, float* out, uint8_t* mask, int64_t nblocks, int64_t bs, const Elem& p,
                  const Blk& bk, int nthreads, int sched) {
    float st_ = 1.0f;
    bool two_pass = bk.mode == 1 && bk.tensor_scale, nt = sched & NT;
    std::vector<int32_t> amaxes;
    if (two_pass) {                                            // NVFP4's fp32 tensor scale
        amaxes.resize(nblocks);
        float m = parallel_max(nthreads, nblocks, [&](int64_t b, int64_t e) {
            return bs == 16 ? block_amax_range<16>(x, amaxes.data(), b, e, bs)
                            : block_amax_range<0>(x, amaxes.data(), b, e, bs);
        });
        st_ = m / bk.tensor_div;
        st_ = st_ > 0 ? st_ : (m > 0 ? 0x1p-149f : 1.0f);          // an underflowing quotient: 2^-149, not 1
    }
    const int32_t* am = two_pass ? amaxes.data() : nullptr;
    parallel(nthreads, nblocks, W, [&](int, int64_t b, int64_t e) {
        if (bk.mode == 0) block_range_m<KIND, 0>(x, out, mask, am, b, e, bs, p, bk, st_, nt);
        else if (bk.mode == 1) block_range_m<KIND, 1>(x, out, mask, am, b, e, bs, p, bk, st_, nt);
        else block_range_m<KIND, 2>(x, out, mask, am, b, e, bs, p, bk, st_, nt);
    });
}

}  // namespace

extern "C" {

int lowbit_native_abi() { return 4; }

// Lanes per vector of this build (the ISA level's register width).
int lowbit_native_lanes() { return W; }

// 1 if the page in the middle of [p, p + bytes) is resident (mapped already: an allocation that reused
// memory), 0 if not (its first touch will fault and zero it), -1 if the system cannot tell.
int lowbit_resident(void* p, int64_t bytes) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0 || bytes < 2 * ps) return -1;
    uintptr_t mid = ((uintptr_t)p + (uintptr_t)bytes / 2) & ~((uintptr_t)ps - 1);
    unsigned char v = 0;
    if (mincore((void*)mid, (size_t)ps, &v) != 0) return -1;
    return v & 1;
}

// Ask for transparent huge pages on the 2 MiB-aligned part of a fresh, untouched allocation: its first
// touch then faults 2 MiB pages instead of 4 KiB ones (512x fewer page faults). 0 on success.
int lowbit_advise_huge(void* p, int64_t bytes) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
    if (e > a) return madvise((void*)a, e - a, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
    return 0;
}

// Per-tensor scale (mode 2: from the finite amax; 1: the given ``scale``) or none (mode 0).
void lowbit_qdq_tensor(const float* x, float* out, uint8_t* mask, int64_t n, const Elem* p, int mode,
                       float scale, float fmt_max, int pow2, int nthreads, int sched) {
    if (p->kind == 0) tensor_kernel<0>(x, out, mask, n, *p, mode, scale, fmt_max, pow2, nthreads, sched);
    else tensor_kernel<1>(x, out, mask, n, *p, mode, scale, fmt_max, pow2, nthreads, sched);
}

// ``nblocks`` contiguous blocks of ``bs`` elements, each with its own scale (MX, NVFP4, groups).
void lowbit_qdq_blocks(const float* x, float* out, uint8_t* mask, int64_t nblocks, int64_t bs, const Elem* p,
                       const Blk* b, int nthreads, int sched) {
    if (p->kind == 0) block_kernel<0>(x, out, mask, nblocks, bs, *p, *b, nthreads, sched);
    else block_kernel<1>(x, out, mask, nblocks, bs, *p, *b, nthreads, sched);
}

}  // extern "C"
