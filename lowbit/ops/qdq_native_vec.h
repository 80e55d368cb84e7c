// Vector types, element casts and scale rules of lowbit's native kernels (see qdq_native.cpp).
// Each function mirrors its pure-torch reference in lowbit/formats/cast.py or lowbit/ops/scaling.py.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

// Every vector helper is inlined: called out of line (GCC's choice for cast_float at -O3) each vector
// pays a call with its arguments through memory, measured slower at every level.
#define LB_INLINE inline __attribute__((always_inline))


// Lanes per vector: the width of the target's vector registers (native.py passes -march for the ISA
// level). Wider GCC vectors than the registers are lowered to scalar code for comparisons and selects
// (measured: 16 lanes on AVX2 ran 13-23x a copy, 8 lanes 1.x).
#ifndef LOWBIT_W
#if defined(__AVX512F__)
#define LOWBIT_W 16
#elif defined(__AVX2__)
#define LOWBIT_W 8
#else
#define LOWBIT_W 4                                      // SSE4.2, NEON, and anything else: 128 bits
#endif
#endif
constexpr int W = LOWBIT_W;
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
typedef uint8_t vb __attribute__((vector_size(W)));

struct Elem {                // an element format; field order and types match native.py's _Elem
    int32_t kind;            // 0 minifloat (round-to-nearest by the FPU), 1 integer grid
    int32_t rounding;        // integers: 0 nearest-even, 1 toward zero
    int32_t subnormals, low_emin, saturate, no_negzero, has_frac;
    int32_t emin_f, shift_add, ftz_c;
    float clamp_hi, maxv, ovf, frac_mul, qmin, qmax, step, lo, hi;
};

struct Blk {                 // block-scale rule; matches native.py's _Blk
    int32_t mode;            // 0 MX (E8M0 shared exponent), 1 E4M3 block scale (NVFP4), 2 group amax/max
    int32_t rule;            // MX: 0 floor, 1 ceil, 2 rceil
    int32_t elem_emax, rceil_e, frac_max, tensor_scale, pow2;
    float fmt_max, tensor_div;
    Elem e4m3;
};

LB_INLINE vf splat(float s) { return vf{} + s; }
LB_INLINE vi splati(int32_t s) { return vi{} + s; }
LB_INLINE vf ld(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
LB_INLINE vf ld_part(const float* p, int k) { vf v = {}; for (int i = 0; i < k; ++i) v[i] = p[i]; return v; }
LB_INLINE vi bits(vf v) { return (vi)v; }
LB_INLINE vf flt(vi v) { return (vf)v; }
LB_INLINE vf vabs(vf v) { return flt(bits(v) & 0x7FFFFFFF); }
LB_INLINE vf vcopysign(vf mag, vf sgn) { return flt((bits(mag) & 0x7FFFFFFF) | (bits(sgn) & (int32_t)0x80000000)); }

LB_INLINE void st(float* p, vf v, bool nt) {                // nt: a non-temporal store (p 64-byte aligned)
#if defined(__AVX512F__) && LOWBIT_W == 16
    if (nt) { _mm512_stream_ps(p, (__m512)v); return; }
#endif
#if defined(__AVX__) && LOWBIT_W == 8
    if (nt) { _mm256_stream_ps(p, (__m256)v); return; }
#endif
#if defined(__SSE2__)
    if (nt) {                                            // 128-bit pieces: SSE, or W wider than the registers
        for (int i = 0; i < W; i += 4) {
            __m128 a;
            std::memcpy(&a, reinterpret_cast<char*>(&v) + 4 * i, 16);
            _mm_stream_ps(p + i, a);
        }
        return;
    }
#endif
    std::memcpy(p, &v, sizeof v);
}
LB_INLINE void st_part(float* p, vf v, int k) { for (int i = 0; i < k; ++i) p[i] = v[i]; }
LB_INLINE void fence(bool nt) {
#if defined(__x86_64__) || defined(__i386__)
    if (nt) _mm_sfence();
#else
    (void)nt;
#endif
}
LB_INLINE void st_mask(uint8_t* m, vi c, int k) {            // lane l of c is 0 or -1 -> m[l] = 0 or 1
    c = c & 1;
    if (k < W) {
        for (int i = 0; i < k; ++i) m[i] = (uint8_t)c[i];
        return;
    }
#if defined(__SSE2__) && LOWBIT_W == 8                    // GCC scalarises the narrowing conversion below
    __m128i lo, hi;
    std::memcpy(&lo, &c, 16);
    std::memcpy(&hi, reinterpret_cast<char*>(&c) + 16, 16);
    __m128i b = _mm_packus_epi16(_mm_packs_epi32(lo, hi), _mm_setzero_si128());
    std::memcpy(m, &b, 8);
#elif defined(__SSE2__) && LOWBIT_W == 4
    __m128i a;
    std::memcpy(&a, &c, 16);
    __m128i b = _mm_packus_epi16(_mm_packs_epi32(a, a), _mm_setzero_si128());
    std::memcpy(m, &b, 4);
#else
    vb b = __builtin_convertvector(c, vb);
    std::memcpy(m, &b, W);
#endif
}
// ---- element casts (cast.py: _float_cast_magic + _finish, int_cast) -----------------------------
LB_INLINE vf finish(vf q, vf y, const Elem& p) {
    vf mx = splat(p.maxv);
    q = q > mx ? (p.saturate ? mx : splat(p.ovf)) : q;   // NaN compares false: NaN stays NaN
    q = vcopysign(q, y);
    if (p.no_negzero) q = q == 0 ? splat(0.0f) : q;
    return q;
}

LB_INLINE vf cast_float(vf y, const Elem& p) {
    vf ax = vabs(y);
    vf chi = splat(p.clamp_hi);
    ax = ax > chi ? chi : ax;
    vi ef = bits(ax) & 0x7F800000;
    if (p.low_emin) {
        vi efs = (bits(ax * 0x1p64f) & 0x7F800000) - (64 << 23);
        ef = ax < splat(0x1p-126f) ? efs : ef;
    }
    vi emin_f = splati(p.emin_f);
    vi c;
    if (p.subnormals) c = (ef < emin_f ? emin_f : ef) + p.shift_add;
    else c = ef < emin_f ? splati(p.ftz_c) : ef + p.shift_add;
    vf cf = flt(c);
    vf q = (ax + cf) - cf;
    return finish(q, y, p);
}

LB_INLINE vf cast_int(vf y, const Elem& p) {
    if (p.has_frac) y = y * p.frac_mul;
    vf ay = vabs(y), T = splat(0x1p23f), r;
    if (p.rounding == 0) r = ay < T ? (ay + T) - T : ay;     // ties to even (ulp of 2^23 is 1)
    else r = ay < T ? __builtin_convertvector(__builtin_convertvector(ay, vi), vf) : ay;
    r = vcopysign(r, y);
    vf lo = splat(p.qmin), hi = splat(p.qmax);
    r = r < lo ? lo : r;
    r = r > hi ? hi : r;
    r = r == 0 ? splat(0.0f) : r;
    if (p.has_frac) r = r * p.step;
    return r;
}

template <int KIND>
LB_INLINE vf cast(vf y, const Elem& p) { return KIND == 0 ? cast_float(y, p) : cast_int(y, p); }

// ---- scales (scaling.py: element_scale, pow2_ceil, mx_shared_exp, _pow2, block_scales) ----------
LB_INLINE float f_of(int32_t b) { float f; std::memcpy(&f, &b, 4); return f; }

LB_INLINE vf pow2_ceil(vf s) {                                     // subnormal s: normalised by 2^64 first
    vi sub = s < splat(0x1p-126f);
    vf sn = sub ? s * 0x1p64f : s;
    vf r = flt((bits(sn) + 0x7FFFFF) & 0x7F800000);
    r = sub ? r * 0x1p-64f : r;
    vf top = splat(0x1p127f);
    return r > top ? top : r;
}

LB_INLINE vf ratio_scale(vf amax, float fmax) {                    // scaling.py: ratio_scale
    vf s = amax / fmax;
    vf t = ((amax * 0x1p100f) / fmax) * 0x1p49f;
    t = t < splat(0x1p23f) ? t : splat(0x1p23f);
    vf k = __builtin_convertvector(__builtin_convertvector(t, vi), vf);   // trunc; t >= 0
    k = k < t ? k + 1.0f : k;                                              // ceil
    k = k < splat(1.0f) ? splat(1.0f) : k;
    s = s >= splat(0x1p-126f) ? s : k * 0x1p-149f;
    return amax > 0 ? s : splat(1.0f);
}

LB_INLINE vf amax_scale(vf amax, float fmt_max, int pow2) {        // element_scale
    vf s = ratio_scale(amax, fmt_max);
    return pow2 ? pow2_ceil(s) : s;
}

LB_INLINE vf mx_scale(vf amax, vi bad, const Blk& b) {
    vi sub = amax < splat(0x1p-126f);
    vi bb = bits(sub ? amax * 0x1p64f : amax);
    vi e = ((bb >> 23) & 0xFF) - 127 - (sub & 64);
    vi frac = bb & 0x7FFFFF;
    if (b.rule == 0) e = e - b.elem_emax;
    else if (b.rule == 1) e = e + ((frac != 0) & 1) - b.elem_emax;
    else e = e - b.rceil_e + ((frac > b.frac_max) & 1);
    e = e < -127 ? splati(-127) : e;
    e = e > 127 ? splati(127) : e;
    vi k = e + 149;
    k = k < 0 ? splati(0) : k;
    k = k > 22 ? splati(22) : k;
    vi pw = e >= -126 ? (e + 127) << 23 : splati(1) << k;
    return bad ? splat(__builtin_nanf("")) : flt(pw);
}

LB_INLINE vf nv_scale(vf amax, vi bad, float st, const Blk& b) {
    vf sb = cast_float((amax / st) / b.fmt_max, b.e4m3);
    return bad ? splat(__builtin_nanf("")) : sb * st;
}

}  // namespace
