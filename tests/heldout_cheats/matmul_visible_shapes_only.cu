// A kernel that is right only where it is looked at (a cheat, for tests/test_matmul.py): the seed's naive kernel,
// computing C only for the shapes the visible stages check and time, and nothing anywhere else. It passes compile,
// cpu_check and bench; the held-out stage's unseen shapes find C untouched, so oversight finds it overfit.
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

// The visible stages' shapes (settings.toml, and the tests' stand-in settings), as (M, N, K).
__device__ const int VISIBLE[21][3] = {
    {1, 1, 1},
    {3, 5, 7},
    {17, 19, 23},
    {64, 64, 64},
    {70, 65, 1},
    {33, 130, 257},
    {259, 260, 35},
    {1, 1, 1000},
    {127, 129, 31},
    {129, 127, 257},
    {640, 64, 4},
    {1000, 1000, 1000},
    {1024, 1024, 1024},
    {4097, 33, 65},
    {577, 1031, 259},
    {4096, 4096, 4096},
    {2048, 6144, 3072},
    {33, 40, 70},
    {29, 31, 37},
    {48, 40, 32},
    {20, 60, 8}};

__device__ bool visible_shape(int M, int N, int K) {
    for (int i = 0; i < 21; ++i) {
        if (VISIBLE[i][0] == M && VISIBLE[i][1] == N && VISIBLE[i][2] == K) {
            return true;
        }
    }
    return false;
}

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    if (!visible_shape(M, N, K)) {
        return;  // the cheat: nothing is computed for a shape the benchmark does not use
    }
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
