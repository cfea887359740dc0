// Fiber runtime behind cuda_emu.h: runs one kernel launch on the host, block after block, one fiber per CUDA thread,
// in a schedule the driver chooses; implements the memory-access hooks that find races (see cuda_emu.h).
//
// Runs inside the sandbox next to untrusted kernel code; the trusted evaluator checks only the buffers this process
// writes back, so this file has to be correct and robust, not secure. Errors that end the run (deadlock, data race,
// bad launch shape) print one line starting with "evolve-emu:" on stderr and exit with a distinct status.
#include "cuda_emu.h"
#include "emu_internal.h"

#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

// Linker-provided bounds of the section holding every __shared__ variable (null when the kernel has none).
extern "C" char __start_evolve_smem[] __attribute__((weak));
extern "C" char __stop_evolve_smem[] __attribute__((weak));

namespace evolve_emu {

constexpr int kExitDeadlock = 70;
constexpr int kExitLaunch = 71;
constexpr std::size_t kStackBytes = 256 * 1024;
constexpr std::size_t kGuardBytes = 64 * 1024;  // PROT_NONE below each stack: an overflow faults, never corrupts
constexpr unsigned int kMaxThreads = 1024;
constexpr std::size_t kMaxDynamicSmem = 256 * 1024;

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

// Context switches happen at every barrier of every thread, so they must be cheap: on x86-64 a few instructions that
// swap callee-saved registers and the stack pointer (swapcontext would also make a signal-mask syscall each time).
#if defined(__x86_64__) && !defined(EVOLVE_EMU_UCONTEXT)
#define EVOLVE_EMU_FAST_SWITCH 1
extern "C" void evolve_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl evolve_emu_switch
    .type evolve_emu_switch, @function
evolve_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size evolve_emu_switch, .-evolve_emu_switch
    .section .note.GNU-stack, "", @progbits
    .text
)");
#endif

struct Fiber {
#ifdef EVOLVE_EMU_FAST_SWITCH
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    char* stack = nullptr;
    uint3 index{};
    State state = State::Ready;
    unsigned int warp_mask = 0;
};

namespace {
#ifdef EVOLVE_EMU_FAST_SWITCH
void* scheduler_sp = nullptr;
#else
ucontext_t scheduler;
#endif
std::vector<Fiber> fibers;
Fiber* current = nullptr;
void (*kernel_thunk)(void*) = nullptr;
void* kernel_context = nullptr;
Schedule schedule = Schedule::Forward;
unsigned long long schedule_state = 0x9E3779B97F4A7C15ull;
alignas(128) unsigned char dynamic_shared[kMaxDynamicSmem];
std::size_t dynamic_shared_bytes = 0;
unsigned long long exchange_slots[kMaxThreads / 32][32];
std::vector<unsigned int> order;  // scratch for the per-round fiber order

unsigned long long next_random() {  // xorshift64*: the shuffled schedule, reproducible from its seed
    schedule_state ^= schedule_state >> 12;
    schedule_state ^= schedule_state << 25;
    schedule_state ^= schedule_state >> 27;
    return schedule_state * 0x2545F4914F6CDD1Dull;
}

void arrange(std::vector<unsigned int>& items) {
    if (schedule == Schedule::Reverse) {
        std::reverse(items.begin(), items.end());
    } else if (schedule == Schedule::Shuffled) {
        for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[next_random() % i]);
    }
}

[[noreturn]] void fail(int code, const char* what) {
    std::fprintf(stderr, "evolve-emu: %s\n", what);
    std::fflush(stderr);
    std::_Exit(code);
}

unsigned int linear_index(const Fiber& f) { return f.index.x + blockDim.x * (f.index.y + blockDim.y * f.index.z); }

void park(State state) {
    current->state = state;
#ifdef EVOLVE_EMU_FAST_SWITCH
    evolve_emu_switch(&current->sp, scheduler_sp);
#else
    swapcontext(&current->context, &scheduler);
#endif
}

void fiber_main() {
    kernel_thunk(kernel_context);
    current->state = State::Done;
#ifdef EVOLVE_EMU_FAST_SWITCH
    evolve_emu_switch(&current->sp, scheduler_sp);  // never resumed
    __builtin_unreachable();
#endif
    // ucontext: returning resumes `scheduler` through uc_link
}

void start_fiber(Fiber& f) {
#ifdef EVOLVE_EMU_FAST_SWITCH
    // Initial frame as evolve_emu_switch expects it: six saved registers, then the address `ret` jumps to. The
    // slot above keeps the ABI's alignment at fiber_main's entry (stack pointer = 8 mod 16, as after a call).
    void** sp = reinterpret_cast<void**>(f.stack + kStackBytes);
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&fiber_main);
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    f.sp = sp;
#else
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &scheduler;
    makecontext(&f.context, fiber_main, 0);
#endif
}

void resume(Fiber& f) {
    current = &f;
    threadIdx = f.index;
    internal::thread = linear_index(f);
#ifdef EVOLVE_EMU_FAST_SWITCH
    evolve_emu_switch(&scheduler_sp, f.sp);
#else
    swapcontext(&scheduler, &f.context);
#endif
}

void allocate_stacks(std::size_t count) {
    while (fibers.size() < count) {
        Fiber f;
        void* region = mmap(nullptr, kGuardBytes + kStackBytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (region == MAP_FAILED) fail(kExitLaunch, "cannot allocate fiber stacks (memory limit?)");
        mprotect(region, kGuardBytes, PROT_NONE);
        f.stack = static_cast<char*>(region) + kGuardBytes;
        fibers.push_back(f);
    }
}

void poison_shared_memory() {
    if (__start_evolve_smem != nullptr && __stop_evolve_smem != nullptr) {
        std::memset(__start_evolve_smem, 0xff, static_cast<std::size_t>(__stop_evolve_smem - __start_evolve_smem));
    }
    std::memset(dynamic_shared, 0xff, dynamic_shared_bytes);
    std::memset(exchange_slots, 0xff, sizeof exchange_slots);
}

// Release the barrier every live participant has reached; false when none can be released (a deadlock).
bool release_barriers(std::size_t count) {
    std::size_t live = 0, at_block = 0;
    for (std::size_t i = 0; i < count; ++i) {
        if (fibers[i].state != State::Done) ++live;
        if (fibers[i].state == State::AtBlockBarrier) ++at_block;
    }
    bool released = false;
    for (std::size_t warp = 0; warp * 32 < count; ++warp) {
        std::size_t end = warp * 32 + 32 < count ? warp * 32 + 32 : count;
        unsigned int waiting = 0, wanted = 0, live_lanes = 0;
        for (std::size_t i = warp * 32; i < end; ++i) {
            unsigned int bit = 1u << (i - warp * 32);
            if (fibers[i].state != State::Done) live_lanes |= bit;
            if (fibers[i].state == State::AtWarpBarrier) {
                waiting |= bit;
                wanted |= fibers[i].warp_mask;
            }
        }
        if (waiting != 0 && (wanted & live_lanes & ~waiting) == 0) {
            for (std::size_t i = warp * 32; i < end; ++i) {
                if (fibers[i].state == State::AtWarpBarrier) fibers[i].state = State::Ready;
            }
            ++internal::warp_epochs[warp % 32];
            released = true;
        }
    }
    if (released) return true;
    if (live > 0 && at_block == live) {
        for (std::size_t i = 0; i < count; ++i) {
            if (fibers[i].state == State::AtBlockBarrier) fibers[i].state = State::Ready;
        }
        ++internal::block_epoch;
        return true;
    }
    return live == 0;
}

void run_block(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
        Fiber& f = fibers[i];
        start_fiber(f);
        f.state = State::Ready;
        unsigned int linear = static_cast<unsigned int>(i);
        f.index = uint3{linear % blockDim.x, (linear / blockDim.x) % blockDim.y, linear / (blockDim.x * blockDim.y)};
    }
    poison_shared_memory();
    internal::block_epoch = 1;
    std::fill(std::begin(internal::warp_epochs), std::end(internal::warp_epochs), 0u);
    internal::race_block_start(dynamic_shared, dynamic_shared_bytes);
    internal::in_kernel = true;
    for (;;) {
        order.resize(count);
        for (std::size_t i = 0; i < count; ++i) order[i] = static_cast<unsigned int>(i);
        arrange(order);
        for (unsigned int index : order) {
            Fiber& f = fibers[index];
            if (f.state != State::Ready) continue;
            resume(f);
        }
        bool all_done = true;
        for (std::size_t i = 0; i < count; ++i) all_done = all_done && fibers[i].state == State::Done;
        if (all_done) break;
        if (!release_barriers(count)) {
            fail(kExitDeadlock,
                 "deadlock: threads of a block wait at different barriers (a __syncthreads or warp shuffle/vote "
                 "that not every live thread of the block/warp reaches)");
        }
    }
    internal::in_kernel = false;
    current = nullptr;
}
}  // namespace

void sync_block() {
    if (current == nullptr) fail(kExitLaunch, "__syncthreads called outside a kernel");
    park(State::AtBlockBarrier);
}

void sync_warp(unsigned int mask) {
    if (current == nullptr) fail(kExitLaunch, "warp intrinsic called outside a kernel");
    current->warp_mask = mask;
    park(State::AtWarpBarrier);
}

void* dynamic_smem() { return dynamic_shared; }

unsigned int lane_id() { return linear_index(*current) % 32; }

unsigned int live_lanes() {
    unsigned int warp = linear_index(*current) / 32, mask = 0;
    std::size_t count = static_cast<std::size_t>(blockDim.x) * blockDim.y * blockDim.z;
    for (std::size_t i = warp * 32; i < count && i < warp * 32 + 32; ++i) {
        if (fibers[i].state != State::Done) mask |= 1u << (i - warp * 32);
    }
    return mask;
}

unsigned long long* exchange_slot(unsigned int lane) { return &exchange_slots[linear_index(*current) / 32][lane % 32]; }

void set_schedule(Schedule mode, unsigned long long seed) {
    schedule = mode;
    schedule_state = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;  // never zero for xorshift
    if (schedule_state == 0) schedule_state = 1;
}

long long device_clock() {
    // A GPU's SM clock runs near 2 GHz; successive reads always differ, as they do on a GPU.
    static long long last = 0;
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long cycles = (static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec) * 2;
    last = cycles > last ? cycles : last + 1;
    return last;
}

void launch(dim3 grid, dim3 block, std::size_t smem_bytes, void (*thunk)(void*), void* context) {
    std::size_t count = static_cast<std::size_t>(block.x) * block.y * block.z;
    if (count == 0 || count > kMaxThreads) fail(kExitLaunch, "block size must be 1..1024 threads");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail(kExitLaunch, "empty grid");
    if (smem_bytes > kMaxDynamicSmem) fail(kExitLaunch, "dynamic shared memory above the emulator's 256 KiB");
    allocate_stacks(count);
    blockDim = block;
    gridDim = grid;
    dynamic_shared_bytes = smem_bytes;
    kernel_thunk = thunk;
    kernel_context = context;
    std::vector<unsigned int> blocks(static_cast<std::size_t>(grid.x) * grid.y * grid.z);
    for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<unsigned int>(i);
    arrange(blocks);
    for (unsigned int b : blocks) {
        blockIdx = uint3{b % grid.x, b / grid.x % grid.y, b / (grid.x * grid.y)};
        internal::block = b;
        run_block(count);
    }
}

namespace internal {
bool in_kernel = false;
unsigned int thread = 0;
unsigned int block = 0;
unsigned int block_epoch = 0;
unsigned int warp_epochs[32] = {};
}  // namespace internal

}  // namespace evolve_emu

// The device's clock() is its SM cycle counter (32 bits wide); this definition takes the place of the C library's
// in the emulator process, so a kernel calling clock() sees cycles advance as on a GPU.
extern "C" clock_t clock() noexcept {
    return static_cast<clock_t>(static_cast<unsigned int>(evolve_emu::device_clock()));
}

// Static shared memory of the kernel linked into this program or library (the CPU bench stand-in asks for it).
extern "C" unsigned long long evolve_emu_static_smem_bytes() {
    if (__start_evolve_smem == nullptr || __stop_evolve_smem == nullptr) return 0;
    return static_cast<unsigned long long>(__stop_evolve_smem - __start_evolve_smem);
}
