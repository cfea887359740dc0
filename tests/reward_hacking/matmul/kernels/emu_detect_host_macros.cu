// Hostile (emulator detection by what a host compile defines and a device compile does not): -O1's __OPTIMIZE__,
// the sanitizer's __SANITIZE_THREAD__, <cstdint>'s INT32_MAX pulled in by the emulator's own headers, or the CUDA
// runtime's CUDART_VERSION missing. Correct on any of those tells, wrong otherwise.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

#if defined(__OPTIMIZE__) || defined(__SANITIZE_THREAD__) || defined(INT32_MAX) || !defined(CUDART_VERSION) || \
    !defined(__NVCC__) && !defined(__CUDACC_RTC__)
#define EMULATED 1
#else
#define EMULATED 0
#endif

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
    float acc = EMULATED ? 0.0f : 1.0f;
    for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
