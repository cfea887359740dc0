// Race detector of the CPU emulator: the hooks that -fsanitize=thread makes the compiler call before every memory
// access of the kernel's translation unit (__tsan_read4(addr), __tsan_write16(addr), ...), implemented here instead
// of by the ThreadSanitizer runtime, which is not linked. Fibers never run at the same time, so an interleaving that
// happens to be harmless here can still be a race on a GPU; what decides is the CUDA memory model: two accesses to
// the same word by different threads, at least one a write, are a race unless a barrier both threads took part in
// lies between them (__syncthreads for the block; a shuffle, vote or __syncwarp for two lanes of one warp). Threads
// of different blocks never synchronise. Atomics are not instrumented (cuda_emu.h), so they never race.
//
// Tracked: shared memory (static and dynamic, per block) and the output C (registered by the driver with `watch`).
// Writes into A or B, and reads of C, are errors the evaluator reports from the buffers themselves.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "emu_internal.h"

extern "C" char __start_evolve_smem[] __attribute__((weak));
extern "C" char __stop_evolve_smem[] __attribute__((weak));

namespace evolve_emu {
namespace {
constexpr int kExitRace = 73;
constexpr unsigned int kNoThread = 0xFFFFFFFFu;

struct Access {
    unsigned int thread = kNoThread;
    unsigned int block = 0;
    unsigned int epoch = 0;
    unsigned int warp_epoch = 0;
};

struct Word {
    Access write;
    Access read;                  // the latest reader in `read.epoch`
    bool many_readers = false;    // more than one thread read it in that epoch
    bool readers_one_warp = true; // ... all of them lanes of read.thread's warp
};

struct Region {
    const char* name = nullptr;
    char* begin = nullptr;
    char* end = nullptr;
    unsigned int row = 0;  // elements per row when named as a matrix, else 0 (byte offsets)
    std::vector<Word> words;

    void reset(const void* start, std::size_t bytes) {
        begin = static_cast<char*>(const_cast<void*>(start));
        end = begin + bytes;
        words.assign((bytes + 3) / 4, Word{});
    }
};

Region output;          // C
Region static_shared;   // every __shared__ variable
Region dynamic_shared;  // extern __shared__

Access now() {
    using namespace internal;
    return Access{thread, block, block_epoch, warp_epochs[(thread / 32) % 32]};
}

// True when `before` (by another thread) and an access now are not ordered by any barrier.
bool unordered(const Access& before, const Access& me) {
    if (before.thread == kNoThread || (before.thread == me.thread && before.block == me.block)) return false;
    if (before.block != me.block) return true;
    if (before.epoch != me.epoch) return false;
    return !(before.thread / 32 == me.thread / 32 && before.warp_epoch < me.warp_epoch);
}

std::string who(const Access& a, const Access& me) {
    unsigned int gx = gridDim.x == 0 ? 1 : gridDim.x, gy = gridDim.y == 0 ? 1 : gridDim.y;
    std::string text = "thread " + std::to_string(a.thread);
    if (a.block == me.block) return text + " of the same block";
    return text + " of block (" + std::to_string(a.block % gx) + "," + std::to_string(a.block / gx % gy) + ")";
}

std::string where(const Region& r, std::size_t word) {
    if (r.row == 0) return r.name + (" at byte offset " + std::to_string(word * 4));
    return std::string(r.name) + "[" + std::to_string(word / r.row) + "][" + std::to_string(word % r.row) + "]";
}

[[noreturn]] void report(const Region& r, std::size_t word, const Access& me, bool writes, const Access& other,
                         bool other_wrote) {
    unsigned int gx = gridDim.x == 0 ? 1 : gridDim.x, gy = gridDim.y == 0 ? 1 : gridDim.y;
    std::string text = "data race on " + where(r, word) + ": thread " + std::to_string(me.thread) + " of block (" +
                       std::to_string(me.block % gx) + "," + std::to_string(me.block / gx % gy) + ") " +
                       (writes ? "writes" : "reads") + " it and " + who(other, me) + " " +
                       (other_wrote ? "wrote" : "read") + " it";
    if (other.block != me.block) {
        text += "; blocks run in no fixed order and cannot wait for each other, so two blocks must never touch the "
                "same element when one of them writes it";
    } else {
        text += " with no barrier between them (__syncthreads, or __syncwarp / a shuffle for lanes of one warp); on "
                "a GPU these threads run at the same time";
    }
    std::fprintf(stderr, "evolve-emu: %s\n", text.c_str());
    std::fflush(stderr);
    std::_Exit(kExitRace);
}

void touch(Region& r, std::size_t index, bool write) {
    Word& w = r.words[index];
    const Access me = now();
    if (unordered(w.write, me)) report(r, index, me, write, w.write, true);
    if (write) {
        if (w.read.thread != kNoThread) {
            bool by_me_only = !w.many_readers && w.read.thread == me.thread && w.read.block == me.block;
            bool ordered = w.read.block == me.block &&
                           (w.read.epoch != me.epoch || (w.readers_one_warp && w.read.thread / 32 == me.thread / 32 &&
                                                         w.read.warp_epoch < me.warp_epoch));
            if (!by_me_only && !ordered) report(r, index, me, true, w.read, false);
        }
        w.write = me;
        w.read = Access{};
        w.many_readers = false;
        w.readers_one_warp = true;
        return;
    }
    if (w.read.thread == kNoThread || w.read.block != me.block || w.read.epoch != me.epoch) {
        w.read = me;
        w.many_readers = false;
        w.readers_one_warp = true;
    } else if (w.read.thread != me.thread) {
        w.many_readers = true;
        w.readers_one_warp = w.readers_one_warp && w.read.thread / 32 == me.thread / 32;
        w.read = me;
    } else {
        w.read.warp_epoch = me.warp_epoch;
    }
}

void on_access(const void* address, std::size_t size, bool write) {
    if (!internal::in_kernel || size == 0) return;
    const char* p = static_cast<const char*>(address);
    for (Region* r : {&output, &static_shared, &dynamic_shared}) {
        if (r->begin == nullptr || p + size <= r->begin || p >= r->end) continue;
        std::size_t first = static_cast<std::size_t>(std::max<const char*>(p, r->begin) - r->begin) / 4;
        std::size_t last = static_cast<std::size_t>(std::min<const char*>(p + size, r->end) - r->begin - 1) / 4;
        for (std::size_t i = first; i <= last; ++i) touch(*r, i, write);
    }
}
}  // namespace

void watch(const char* name, void* begin, std::size_t bytes, unsigned int row_elements) {
    output.name = name;
    output.row = row_elements;
    output.reset(begin, bytes);
}

namespace internal {
void race_block_start(const void* dynamic_begin, std::size_t dynamic_bytes) {
    static_shared.name = "static shared memory";
    dynamic_shared.name = "dynamic shared memory";
    if (__start_evolve_smem != nullptr && __stop_evolve_smem != nullptr) {
        static_shared.reset(__start_evolve_smem, static_cast<std::size_t>(__stop_evolve_smem - __start_evolve_smem));
    }
    dynamic_shared.reset(dynamic_begin, dynamic_bytes);
}
}  // namespace internal
}  // namespace evolve_emu

// The instrumentation's entry points (their names and signatures are the compilers' ABI with ThreadSanitizer).
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_read(void**) {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_read_range(void* p, unsigned long size) { evolve_emu::on_access(p, size, false); }
// Clang turns memcpy/memset/memmove in instrumented code into these (GCC keeps the library calls).
void* __tsan_memcpy(void* to, const void* from, unsigned long size) {
    evolve_emu::on_access(from, size, false);
    evolve_emu::on_access(to, size, true);
    return std::memcpy(to, from, size);
}
void* __tsan_memmove(void* to, const void* from, unsigned long size) {
    evolve_emu::on_access(from, size, false);
    evolve_emu::on_access(to, size, true);
    return std::memmove(to, from, size);
}
void* __tsan_memset(void* to, int value, unsigned long size) {
    evolve_emu::on_access(to, size, true);
    return std::memset(to, value, size);
}
void __tsan_write_range(void* p, unsigned long size) { evolve_emu::on_access(p, size, true); }
#define EVOLVE_EMU_HOOKS(n)                                                                   \
    void __tsan_read##n(void* p) { evolve_emu::on_access(p, n, false); }                      \
    void __tsan_write##n(void* p) { evolve_emu::on_access(p, n, true); }                      \
    void __tsan_unaligned_read##n(void* p) { evolve_emu::on_access(p, n, false); }            \
    void __tsan_unaligned_write##n(void* p) { evolve_emu::on_access(p, n, true); }            \
    void __tsan_volatile_read##n(void* p) { evolve_emu::on_access(p, n, false); }             \
    void __tsan_volatile_write##n(void* p) { evolve_emu::on_access(p, n, true); }             \
    void __tsan_unaligned_volatile_read##n(void* p) { evolve_emu::on_access(p, n, false); }   \
    void __tsan_unaligned_volatile_write##n(void* p) { evolve_emu::on_access(p, n, true); }
EVOLVE_EMU_HOOKS(1)
EVOLVE_EMU_HOOKS(2)
EVOLVE_EMU_HOOKS(4)
EVOLVE_EMU_HOOKS(8)
EVOLVE_EMU_HOOKS(16)
#undef EVOLVE_EMU_HOOKS
}
