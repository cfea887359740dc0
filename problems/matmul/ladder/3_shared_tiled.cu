// Rung 3: shared-memory tiling. The block stages a BLOCK_M x BK slice of A and a BK x BLOCK_N slice of B in shared
// memory, so each global element is read once per block instead of once per thread.
// Program format: see ../README.md.

// EVOLVE-BLOCK-START
constexpr int THREADS = 1024;
constexpr int BLOCK_M = 32;
constexpr int BLOCK_N = 32;
constexpr int SMEM_BYTES = 0;
constexpr int BK = 32;
static_assert(THREADS == BLOCK_M * BLOCK_N, "one thread per element of the block's tile");

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[BLOCK_M][BK];
    __shared__ float Bs[BK][BLOCK_N];
    const int m0 = blockIdx.y * BLOCK_M;
    const int n0 = blockIdx.x * BLOCK_N;
    const int tr = threadIdx.x / BLOCK_N;
    const int tc = threadIdx.x % BLOCK_N;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BK) {
        // Out-of-range elements are staged as zeros so the inner loop needs no bounds checks.
        for (int i = threadIdx.x; i < BLOCK_M * BK; i += THREADS) {
            const int r = i / BK, c = i % BK;
            As[r][c] = (m0 + r < M && k0 + c < K) ? A[(m0 + r) * K + k0 + c] : 0.0f;
        }
        for (int i = threadIdx.x; i < BK * BLOCK_N; i += THREADS) {
            const int r = i / BLOCK_N, c = i % BLOCK_N;
            Bs[r][c] = (k0 + r < K && n0 + c < N) ? B[(k0 + r) * N + n0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            acc += As[tr][k] * Bs[k][tc];
        }
        __syncthreads();
    }
    if (m0 + tr < M && n0 + tc < N) {
        C[(m0 + tr) * N + n0 + tc] = acc;
    }
}
// EVOLVE-BLOCK-END
