// Rung 4: 1-D block tiling. Each thread computes TM outputs of one column, reusing each element of B it reads
// from shared memory TM times; fewer, busier threads raise arithmetic intensity.
// Program format: see ../README.md.

// EVOLVE-BLOCK-START
constexpr int THREADS = 512;
constexpr int BLOCK_M = 64;
constexpr int BLOCK_N = 64;
constexpr int SMEM_BYTES = 0;
constexpr int BK = 8;
constexpr int TM = 8;
static_assert(THREADS * TM == BLOCK_M * BLOCK_N, "each thread owns TM outputs of the block's tile");
static_assert(BLOCK_M % TM == 0, "TM must divide BLOCK_M");

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[BLOCK_M][BK];
    __shared__ float Bs[BK][BLOCK_N];
    const int m0 = blockIdx.y * BLOCK_M;
    const int n0 = blockIdx.x * BLOCK_N;
    const int tc = threadIdx.x % BLOCK_N;
    const int tr = threadIdx.x / BLOCK_N * TM;
    float acc[TM] = {0.0f};
    for (int k0 = 0; k0 < K; k0 += BK) {
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
            const float b = Bs[k][tc];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                acc[i] += As[tr + i][k] * b;
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        if (m0 + tr + i < M && n0 + tc < N) {
            C[(m0 + tr + i) * N + n0 + tc] = acc[i];
        }
    }
}
// EVOLVE-BLOCK-END
