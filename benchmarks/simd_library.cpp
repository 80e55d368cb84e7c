// benchmarks/simd_library.py: lowbit's per-tensor fp8_e4m3 kernel (GCC vector extensions, lowbit/ops/qdq_native.cpp)
// against the same arithmetic written with Highway (Debian libhwy-dev), both on 2 OpenMP threads, same input.
#include <hwy/highway.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <omp.h>
#include "qdq_native.cpp"
namespace hn = hwy::HWY_NAMESPACE;

static float hwy_amax(const float* x, int64_t b, int64_t e) {
    const hn::ScalableTag<int32_t> di;
    const hn::ScalableTag<float> d;
    const int64_t N = hn::Lanes(d);
    auto m0 = hn::Zero(di), m1 = hn::Zero(di);
    const auto am = hn::Set(di, 0x7FFFFFFF), inf = hn::Set(di, 0x7F800000);
    int64_t i = b;
    for (; i + 2 * N <= e; i += 2 * N) {
        auto a0 = hn::And(hn::BitCast(di, hn::LoadU(d, x + i)), am);
        auto a1 = hn::And(hn::BitCast(di, hn::LoadU(d, x + i + N)), am);
        m0 = hn::Max(m0, hn::IfThenElseZero(hn::Lt(a0, inf), a0));
        m1 = hn::Max(m1, hn::IfThenElseZero(hn::Lt(a1, inf), a1));
    }
    int32_t r = hn::GetLane(hn::MaxOfLanes(di, hn::Max(m0, m1)));
    for (; i < e; ++i) { int32_t a; std::memcpy(&a, x + i, 4); a &= 0x7FFFFFFF; if (a < 0x7F800000 && a > r) r = a; }
    return f_of(r);
}

static void hwy_cast_range(const float* x, float* out, int64_t b, int64_t e, const Elem& p, float s, bool nt) {
    const hn::ScalableTag<float> d;
    const hn::RebindToSigned<decltype(d)> di;
    const int64_t N = hn::Lanes(d);
    const auto chi = hn::Set(d, p.clamp_hi), mx = hn::Set(d, p.maxv), ovf = hn::Set(d, p.saturate ? p.maxv : p.ovf);
    const auto sv = hn::Set(d, s);
    const auto emin = hn::Set(di, p.emin_f), sh = hn::Set(di, p.shift_add);
    const auto expm = hn::Set(di, 0x7F800000);
    for (int64_t i = b; i + N <= e; i += N) {
        auto v = hn::LoadU(d, x + i);
        auto y = hn::Div(v, sv);
        auto ax = hn::Abs(y);
        ax = hn::IfThenElse(hn::Gt(ax, chi), chi, ax);
        auto ef = hn::And(hn::BitCast(di, ax), expm);
        auto c = hn::Add(hn::IfThenElse(hn::Lt(ef, emin), emin, ef), sh);      // subnormals kept (fp8_e4m3)
        auto cf = hn::BitCast(d, c);
        auto q = hn::Sub(hn::Add(ax, cf), cf);
        q = hn::IfThenElse(hn::Gt(q, mx), ovf, q);
        q = hn::Mul(hn::CopySign(q, y), sv);
        if (nt) hn::Stream(q, d, out + i); else hn::StoreU(q, d, out + i);
    }
}

static void hwy_kernel(const float* x, float* out, int64_t n, const Elem& p, float fmt_max, int nth, bool nt) {
    float part[64] = {};
    int64_t per = n / nth;
#pragma omp parallel num_threads(nth)
    { int t = omp_get_thread_num(); part[t] = hwy_amax(x, t * per, (t + 1) * per); }
    float m = 0; for (int t = 0; t < nth; ++t) m = part[t] > m ? part[t] : m;
    float s = m / fmt_max; s = s > 0 ? s : 1.0f;
#pragma omp parallel num_threads(nth)
    { int t = omp_get_thread_num(); hwy_cast_range(x, out, t * per, (t + 1) * per, p, s, nt); }
    if (nt) _mm_sfence();
}

int main() {
    const int64_t n = 4096 * 4096;
    float* x = (float*)std::aligned_alloc(64, n * 4); float* o = (float*)std::aligned_alloc(64, n * 4);
    float* o2 = (float*)std::aligned_alloc(64, n * 4);
    srand(1); for (int64_t i = 0; i < n; ++i) x[i] = (rand() / (float)RAND_MAX - 0.5f) * 8;
    Elem p{}; p.kind = 0; p.subnormals = 1; p.saturate = 1; p.emin_f = (-6 + 127) << 23; p.shift_add = (23 - 3) << 23;
    p.clamp_hi = 1024.0f; p.maxv = 448.0f; p.ovf = 448.0f;
    int nth = 2;
    auto tm = [&](auto f) { f(); double best[7]; for (int r = 0; r < 7; ++r) { auto t0 = std::chrono::steady_clock::now(); f();
        best[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
        std::sort(best, best + 7); return best[3]; };
    double rl[5], rh[5];
    for (int round = 0; round < 5; ++round) {
        double tc = tm([&] {
#pragma omp parallel for num_threads(2)
            for (int t = 0; t < 2; ++t) std::memcpy(o + t * (n / 2), x + t * (n / 2), n * 2); });
        double tl = tm([&] { lowbit_qdq_tensor(x, o, nullptr, n, &p, 2, 1.0f, 448.0f, 0, nth, 1); });
        double th = tm([&] { hwy_kernel(x, o2, n, p, 448.0f, nth, true); });
        printf("lanes %d / hwy %d: copy %.2f ms, lowbit %.2f ms (%.2fx), highway %.2f ms (%.2fx), same=%d\n", W,
               (int)hn::Lanes(hn::ScalableTag<float>()), tc * 1e3, tl * 1e3, tl / tc, th * 1e3, th / tc,
               std::memcmp(o, o2, n * 4) == 0);
        rl[round] = tl / tc;
        rh[round] = th / tc;
    }
    std::sort(rl, rl + 5);
    std::sort(rh, rh + 5);
    printf("median over 5 rounds: lowbit %.2fx memcpy, highway %.2fx memcpy\n", rl[2], rh[2]);
}
