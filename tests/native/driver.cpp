// Runs lowbit's native kernels on one job written by tests/test_native_isa.py. Built for another
// architecture (aarch64 with Debian's g++-aarch64-linux-gnu) and run under qemu-user, so the kernels'
// code for that ISA (NEON, 4 lanes) is compared with the eager reference bit for bit.
//
// JOB: struct Job, then the Elem and Blk parameter structs (native.py's _Elem/_Blk bytes), then n fp32
// inputs. OUT: n fp32 results, then n mask bytes.
#include <cstdio>
#include <vector>

#include "qdq_native.cpp"

struct Job {
    int32_t call, mode, pow2, nthreads, sched, want_mask;   // call 0: lowbit_qdq_tensor, 1: lowbit_qdq_blocks
    float scale, fmt_max;
    int64_t n, nblocks, bs;
};

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s JOB OUT\n", argv[0]);
        return 2;
    }
    std::FILE* f = std::fopen(argv[1], "rb");
    Job j;
    Elem e;
    Blk b;
    if (!f || std::fread(&j, sizeof j, 1, f) != 1 || std::fread(&e, sizeof e, 1, f) != 1 ||
        std::fread(&b, sizeof b, 1, f) != 1) {
        std::fprintf(stderr, "%s: cannot read the job header\n", argv[1]);
        return 1;
    }
    std::vector<float> x(j.n), q(j.n);
    std::vector<uint8_t> m(j.n);
    if (std::fread(x.data(), sizeof(float), j.n, f) != (size_t)j.n) {
        std::fprintf(stderr, "%s: cannot read %lld inputs\n", argv[1], (long long)j.n);
        return 1;
    }
    std::fclose(f);
    uint8_t* mp = j.want_mask ? m.data() : nullptr;
    if (j.call == 0) lowbit_qdq_tensor(x.data(), q.data(), mp, j.n, &e, j.mode, j.scale, j.fmt_max, j.pow2,
                                       j.nthreads, j.sched);
    else lowbit_qdq_blocks(x.data(), q.data(), mp, j.nblocks, j.bs, &e, &b, j.nthreads, j.sched);
    std::FILE* o = std::fopen(argv[2], "wb");
    if (!o || std::fwrite(q.data(), sizeof(float), j.n, o) != (size_t)j.n ||
        std::fwrite(m.data(), 1, j.n, o) != (size_t)j.n) {
        std::fprintf(stderr, "%s: cannot write the results\n", argv[2]);
        return 1;
    }
    std::fclose(o);
    std::printf("lanes %d\n", W);
    return 0;
}
