// C = A * B for row-major float32 matrices: A is M x K, B is K x N, C is M x N, any sizes.
//
// Program format (see README.md): the kernel signature below is fixed; the launch shape is given by the four
// integer constants THREADS, BLOCK_M, BLOCK_N and SMEM_BYTES, which the evaluator reads from this text without
// running any host code. It launches 1-D blocks of THREADS threads on a grid of ceil(N / BLOCK_N) x ceil(M / BLOCK_M)
// blocks (blockIdx.x along N, blockIdx.y along M) with SMEM_BYTES of dynamic shared memory. C starts out holding
// garbage: write every element of C exactly as A * B, never read C, never write A or B.
//
// Rung 1 of the ladder: the naive kernel, one thread per output element.

// EVOLVE-BLOCK-START
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;
static_assert(THREADS == BLOCK_M * BLOCK_N, "one thread per element of the block's tile");

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    // Neighbouring threads take neighbouring rows, so a warp's loads of A are K floats apart (uncoalesced).
    const int row = blockIdx.y * BLOCK_M + threadIdx.x % BLOCK_M;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x / BLOCK_M;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) {
            acc += A[row * K + k] * B[k * N + col];
        }
        C[row * N + col] = acc;
    }
}
// EVOLVE-BLOCK-END
