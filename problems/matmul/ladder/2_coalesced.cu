// Rung 2: global memory coalescing. Same work per thread as the naive kernel, but neighbouring threads take
// neighbouring columns, so a warp reads one row of B in consecutive addresses and shares each element of A.
// Program format: see ../README.md.

// EVOLVE-BLOCK-START
constexpr int THREADS = 1024;
constexpr int BLOCK_M = 32;
constexpr int BLOCK_N = 32;
constexpr int SMEM_BYTES = 0;
static_assert(THREADS == BLOCK_M * BLOCK_N, "one thread per element of the block's tile");

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) {
            acc += A[row * K + k] * B[k * N + col];
        }
        C[row * N + col] = acc;
    }
}
// EVOLVE-BLOCK-END
