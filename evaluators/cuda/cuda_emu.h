// Host emulation of the CUDA subset that matmul-style kernels use, for correctness checks on machines without a GPU.
//
// Runs inside the sandbox, force-included (g++ -include) in front of the candidate's kernel source. Execution model
// (implemented in emu_runtime.cpp): blocks run one after another; every CUDA thread of a block is a user-level fiber
// on one host thread; __syncthreads parks a fiber until every live thread of the block reaches it; warp shuffles and
// votes park until every live lane of the warp (within the mask) arrives. Fibers switch only at those points, in an
// order (of blocks and of threads) that the driver varies from case to case: forward, reverse or shuffled. Shared
// memory is poisoned (all bits set, a NaN for floats) before every block, like uninitialised memory on a GPU.
//
// Races: the kernel's translation unit is compiled with -fsanitize=thread, which makes the compiler call a hook
// (__tsan_read4, __tsan_write16, ...) before every memory access; the runtime implements those hooks itself (no
// ThreadSanitizer library is linked) and reports two threads touching the same shared-memory word or the same
// element of C, one of them writing, with no barrier between them (or from two different blocks).
//
// Not giving itself away: the evaluator puts a prologue after this header that makes the preprocessor state that of
// the device compile (__CUDA_ARCH__, __CUDACC__, __NVCC__, the CUDA runtime's macros; host-only macros removed), and
// clock()/clock64() advance like a GPU's cycle counters.
//
// Not emulated (the kernel is then reported as "not checkable on CPU", cpu_checked = 0): inline PTX (asm),
// wmma/mma, cp.async and pipelines, half/bfloat16 types, cooperative groups, textures.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>  // device-side printf
#include <cstring>
#include <ctime>  // clock(), which the runtime redefines as the device's cycle counter
#include <tuple>
#include <utility>

// ---- execution-space and qualifier keywords --------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __cluster_dims__(...)
// Shared memory: one static instance per variable, shared by every fiber of the block. The named section lets the
// runtime find and poison all of it before each block.
#define __shared__ static __attribute__((section("evolve_smem")))

// ---- built-in vector types and indices --------------------------------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

#define EVOLVE_EMU_VEC2(T, name, align) \
    struct __attribute__((aligned(align))) name { T x, y; }; \
    inline name make_##name(T x, T y) { return name{x, y}; }
#define EVOLVE_EMU_VEC4(T, name, align) \
    struct __attribute__((aligned(align))) name { T x, y, z, w; }; \
    inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
EVOLVE_EMU_VEC2(float, float2, 8)
EVOLVE_EMU_VEC4(float, float4, 16)
EVOLVE_EMU_VEC2(int, int2, 8)
EVOLVE_EMU_VEC4(int, int4, 16)
EVOLVE_EMU_VEC2(unsigned int, uint2, 8)
EVOLVE_EMU_VEC4(unsigned int, uint4, 16)
EVOLVE_EMU_VEC2(double, double2, 16)
#undef EVOLVE_EMU_VEC2
#undef EVOLVE_EMU_VEC4
struct float3 {
    float x, y, z;
};
inline float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }

// The runtime updates these before resuming each fiber (one host thread runs every fiber, so plain globals work).
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

namespace evolve_emu {
void sync_block();
void sync_warp(unsigned int mask);
void* dynamic_smem();
unsigned int lane_id();
unsigned int live_lanes();
unsigned long long* exchange_slot(unsigned int lane);  // this warp's 8-byte slot of `lane`
void launch(dim3 grid, dim3 block, std::size_t smem_bytes, void (*thunk)(void*), void* context);
long long device_clock();  // cycles since an arbitrary origin, advancing with real time

// The order in which blocks, and threads between barriers, run (the driver varies it from case to case).
enum class Schedule : unsigned int { Forward = 0, Reverse = 1, Shuffled = 2 };
void set_schedule(Schedule schedule, unsigned long long seed);
// Track races on a global buffer (the output); `row_elements` names elements as [row][column] in messages.
void watch(const char* name, void* begin, std::size_t bytes, unsigned int row_elements);

template <class T, class U>
struct same_type {
    static constexpr bool value = false;
};
template <class T>
struct same_type<T, T> {
    static constexpr bool value = true;
};

template <class... P>
struct LaunchContext {
    void (*kernel)(P...);
    std::tuple<P...> args;
    static void call(void* self) {
        auto* ctx = static_cast<LaunchContext*>(self);
        std::apply(ctx->kernel, ctx->args);
    }
};

// kernel<<<grid, block, smem>>>(args...) on the host.
template <class... P, class... A>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem_bytes, A... args) {
    LaunchContext<P...> ctx{kernel, std::tuple<P...>(args...)};
    launch(grid, block, smem_bytes, &LaunchContext<P...>::call, &ctx);
}

template <class T>
T exchange(unsigned int mask, T value, unsigned int source_lane, bool use_source) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "warp exchange of types wider than 8 bytes");
    std::memcpy(exchange_slot(lane_id()), &value, sizeof(T));
    sync_warp(mask);
    T result = value;
    if (use_source) std::memcpy(&result, exchange_slot(source_lane), sizeof(T));
    sync_warp(mask);  // nobody overwrites a slot before every lane has read it
    return result;
}

inline unsigned int vote(unsigned int mask, bool predicate) {
    unsigned int lane = lane_id();
    unsigned long long mine = predicate ? 1u : 0u;
    std::memcpy(exchange_slot(lane), &mine, sizeof mine);
    sync_warp(mask);
    unsigned int ballot = 0, live = live_lanes() & mask;
    for (unsigned int i = 0; i < 32; ++i) {
        if (live & (1u << i) && *exchange_slot(i)) ballot |= 1u << i;
    }
    sync_warp(mask);
    return ballot;
}
}  // namespace evolve_emu

// ---- synchronisation, warp intrinsics ---------------------------------------------------------------------------
inline void __syncthreads() { evolve_emu::sync_block(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { evolve_emu::sync_warp(mask); }
inline void __threadfence() {}
inline void __threadfence_block() {}
inline unsigned int __activemask() { return evolve_emu::live_lanes(); }

template <class T>
T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
    unsigned int lane = evolve_emu::lane_id();
    unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
    unsigned int src = base + (static_cast<unsigned int>(src_lane) & static_cast<unsigned int>(width - 1));
    return evolve_emu::exchange(mask, value, src, true);
}
template <class T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
    unsigned int lane = evolve_emu::lane_id();
    unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
    unsigned int src = lane + delta;
    return evolve_emu::exchange(mask, value, src, src < base + static_cast<unsigned int>(width));
}
template <class T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
    unsigned int lane = evolve_emu::lane_id();
    unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
    return evolve_emu::exchange(mask, value, lane - delta, lane >= base + delta);
}
template <class T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
    unsigned int lane = evolve_emu::lane_id();
    unsigned int base = lane & ~static_cast<unsigned int>(width - 1);
    unsigned int src = lane ^ static_cast<unsigned int>(lane_mask);
    return evolve_emu::exchange(mask, value, src, src >= base && src < base + static_cast<unsigned int>(width));
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate) { return evolve_emu::vote(mask, predicate != 0); }
inline int __any_sync(unsigned int mask, int predicate) { return evolve_emu::vote(mask, predicate != 0) != 0; }
inline int __all_sync(unsigned int mask, int predicate) {
    return evolve_emu::vote(mask, predicate != 0) == (evolve_emu::live_lanes() & mask);
}

// ---- memory access intrinsics (caching hints have no meaning on the host) ---------------------------------------
template <class T>
T __ldg(const T* p) { return *p; }
template <class T>
T __ldca(const T* p) { return *p; }
template <class T>
T __ldcg(const T* p) { return *p; }
template <class T>
T __ldcs(const T* p) { return *p; }
template <class T>
T __ldlu(const T* p) { return *p; }
template <class T>
T __ldcv(const T* p) { return *p; }
template <class T>
void __stwb(T* p, T v) { *p = v; }
template <class T>
void __stcg(T* p, T v) { *p = v; }
template <class T>
void __stcs(T* p, T v) { *p = v; }
template <class T>
void __stwt(T* p, T v) { *p = v; }

// Fibers never preempt each other between these calls, so plain read-modify-write is atomic here. They are not
// instrumented: atomics never race with each other.
#define EVOLVE_EMU_ATOMIC template <class T> __attribute__((no_sanitize("thread"), noinline))
EVOLVE_EMU_ATOMIC T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
EVOLVE_EMU_ATOMIC T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
EVOLVE_EMU_ATOMIC T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
EVOLVE_EMU_ATOMIC T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }
EVOLVE_EMU_ATOMIC T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
EVOLVE_EMU_ATOMIC T atomicCAS(T* p, T compare, T v) { T old = *p; if (old == compare) *p = v; return old; }
#undef EVOLVE_EMU_ATOMIC

// ---- arithmetic intrinsics ----------------------------------------------------------------------------------------
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmaf_rz(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline float __saturatef(float a) { return a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a); }
inline float __expf(float a) { return std::exp(a); }
inline float __logf(float a) { return std::log(a); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __sinf(float a) { return std::sin(a); }
inline float __cosf(float a) { return std::cos(a); }
inline int __float2int_rn(float a) { return static_cast<int>(std::nearbyint(a)); }
inline int __float2int_rz(float a) { return static_cast<int>(a); }
inline float __int2float_rn(int a) { return static_cast<float>(a); }
inline int __float_as_int(float a) { int r; std::memcpy(&r, &a, sizeof r); return r; }
inline unsigned int __float_as_uint(float a) { unsigned int r; std::memcpy(&r, &a, sizeof r); return r; }
inline float __int_as_float(int a) { float r; std::memcpy(&r, &a, sizeof r); return r; }
inline float __uint_as_float(unsigned int a) { float r; std::memcpy(&r, &a, sizeof r); return r; }
inline int __mul24(int a, int b) { return a * b; }
inline unsigned int __umul24(unsigned int a, unsigned int b) { return a * b; }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline int __popc(unsigned int a) { return __builtin_popcount(a); }
inline int __clz(int a) { return a == 0 ? 32 : __builtin_clz(static_cast<unsigned int>(a)); }
inline int __ffs(int a) { return __builtin_ffs(a); }
inline unsigned int __brev(unsigned int a) {
    unsigned int r = 0;
    for (int i = 0; i < 32; ++i) r |= ((a >> i) & 1u) << (31 - i);
    return r;
}
inline long long clock64() { return evolve_emu::device_clock(); }
inline void __nanosleep(unsigned int) {}
