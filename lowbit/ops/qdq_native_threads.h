// Threads of lowbit's native kernels: torch's OpenMP runtime, or an own pool (see qdq_native.cpp).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <new>
#include <pthread.h>
#include <thread>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

// ---- threads -------------------------------------------------------------------------------------
// Built with -fopenmp (the default) the kernels run on torch's OpenMP threads. Without OpenMP, and
// in a fork()ed child: a persistent pool (spawning a thread costs ~70 us here, more than the whole kernel on a 1 MiB
// tensor). One parallel region at a time: a second caller (another Python thread) runs its parts
// serially instead of waiting. After fork() the child gets a fresh pool (the parent's workers do not
// exist there); the old one is leaked on purpose.
class Pool {
    std::mutex busy_, m_;
    std::condition_variable work_, done_;
    std::vector<std::thread> workers_;
    std::atomic<uint64_t> gen_{0};
    std::atomic<int> pending_{0};
    const std::function<void(int)>* job_ = nullptr;   // published by the release store to gen_
    int njob_ = 0;

    template <class P>
    static bool spin_until(P&& ready, int64_t micros) {   // a short spin: a futex wake-up costs ~25 us
        auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
        for (int i = 1;; ++i) {
            if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
            _mm_pause();
#endif
            if (i % 64 == 0 && std::chrono::steady_clock::now() > end) return false;
        }
    }

    void worker(int id, uint64_t seen) {
        for (;;) {
            auto moved = [&] { return gen_.load(std::memory_order_acquire) != seen; };
            if (!spin_until(moved, 50)) {
                std::unique_lock<std::mutex> lk(m_);
                work_.wait(lk, moved);
            }
            seen = gen_.load(std::memory_order_acquire);
            if (id < njob_) {
                (*job_)(id);
                if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                    std::lock_guard<std::mutex> lk(m_);
                    done_.notify_one();
                }
            }
        }
    }

public:
    void run(int n, const std::function<void(int)>& fn) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (n <= 1 || !busy.owns_lock()) {
            for (int i = 0; i < n; ++i) fn(i);
            return;
        }
        {
            std::lock_guard<std::mutex> lk(m_);
            while ((int)workers_.size() < n - 1) {
                int id = (int)workers_.size() + 1;
                uint64_t g = gen_.load();
                workers_.emplace_back([this, id, g] { worker(id, g); });
            }
            job_ = &fn;
            njob_ = n;
            pending_.store(n - 1, std::memory_order_relaxed);
            gen_.fetch_add(1, std::memory_order_release);
        }
        work_.notify_all();
        fn(0);
        auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
        if (!spin_until(finished, 2000)) {
            std::unique_lock<std::mutex> lk(m_);
            done_.wait(lk, finished);
        }
    }
};

Pool* pool_ = nullptr;
std::mutex pool_mutex;
bool forked = false;   // in a fork()ed child: GNU OpenMP hangs there once the parent used it (torch too)
void after_fork_in_child() {
    forked = true;
    pool_ = nullptr;   // the parent's workers do not exist here; its pool is leaked
    new (&pool_mutex) std::mutex();
}
struct AtFork {
    AtFork() { pthread_atfork(nullptr, nullptr, after_fork_in_child); }
} at_fork;
Pool& pool() {
    std::lock_guard<std::mutex> lk(pool_mutex);
    if (!pool_) pool_ = new Pool();
    return *pool_;
}

template <class F>
void parallel(int nthreads, int64_t n, int64_t align, F&& body) {   // body(tid, begin, end)
    int64_t per = (n + nthreads - 1) / std::max(nthreads, 1);
    per = std::max<int64_t>(align, (per + align - 1) / align * align);
    int parts = (int)((n + per - 1) / per);
    if (parts <= 1) { body(0, 0, n); return; }
#ifdef _OPENMP
    // torch's own OpenMP runtime (same soname, already loaded): its threads are the ones that are
    // awake (spinning) right after a torch op, so they pick this work up at once
    if (!forked) {
#pragma omp parallel num_threads(parts)
        {
            int nth = omp_get_num_threads();
            for (int t = omp_get_thread_num(); t < parts; t += nth) body(t, t * per, std::min(n, (t + 1) * per));
        }
        return;
    }
#endif
    std::function<void(int)> fn = [&](int t) { body(t, t * per, std::min(n, (t + 1) * per)); };
    pool().run(parts, fn);
}

}  // namespace
