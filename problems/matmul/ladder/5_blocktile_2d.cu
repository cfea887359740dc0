// Rung 5: 2-D block tiling. Each thread computes a TM x TN sub-tile as an outer product of TM values of A and TN
// values of B held in registers: TM + TN shared-memory loads feed TM * TN fused multiply-adds.
// Program format: see ../README.md.

// EVOLVE-BLOCK-START
constexpr int THREADS = 256;
constexpr int BLOCK_M = 128;
constexpr int BLOCK_N = 128;
constexpr int SMEM_BYTES = 0;
constexpr int BK = 8;
constexpr int TM = 8;
constexpr int TN = 8;
static_assert(THREADS * TM * TN == BLOCK_M * BLOCK_N, "each thread owns a TM x TN sub-tile");
static_assert(BLOCK_M % TM == 0 && BLOCK_N % TN == 0, "sub-tiles must tile the block's tile");

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[BK][BLOCK_M];  // transposed, so a thread's TM values of A are contiguous
    __shared__ float Bs[BK][BLOCK_N];
    const int m0 = blockIdx.y * BLOCK_M;
    const int n0 = blockIdx.x * BLOCK_N;
    const int tr = threadIdx.x / (BLOCK_N / TN) * TM;
    const int tc = threadIdx.x % (BLOCK_N / TN) * TN;
    float acc[TM][TN] = {{0.0f}};
    float a_reg[TM];
    float b_reg[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int i = threadIdx.x; i < BLOCK_M * BK; i += THREADS) {
            const int r = i / BK, c = i % BK;
            As[c][r] = (m0 + r < M && k0 + c < K) ? A[(m0 + r) * K + k0 + c] : 0.0f;
        }
        for (int i = threadIdx.x; i < BK * BLOCK_N; i += THREADS) {
            const int r = i / BLOCK_N, c = i % BLOCK_N;
            Bs[r][c] = (k0 + r < K && n0 + c < N) ? B[(k0 + r) * N + n0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i) a_reg[i] = As[k][tr + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) b_reg[j] = Bs[k][tc + j];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    acc[i][j] += a_reg[i] * b_reg[j];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            if (m0 + tr + i < M && n0 + tc + j < N) {
                C[(m0 + tr + i) * N + n0 + tc + j] = acc[i][j];
            }
        }
    }
}
// EVOLVE-BLOCK-END
