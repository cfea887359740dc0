// Valid: each warp computes one row of a 32-column strip; the lane that loaded A[row][k] broadcasts it to the warp
// with __shfl_sync, and a warp-wide __shfl_xor_sync sum checks that every lane saw the same tile count.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 8;
constexpr int BLOCK_N = 32;
constexpr int SMEM_BYTES = 0;
static_assert(THREADS == BLOCK_M * BLOCK_N && BLOCK_N == 32, "one warp per row of the tile");

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                                  int M, int N, int K) {
    const int lane = threadIdx.x % 32;
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / 32;
    const int col = blockIdx.x * BLOCK_N + lane;
    float acc = 0.0f;
    int tiles = 0;
    for (int k0 = 0; k0 < K; k0 += 32) {
        const float mine = (row < M && k0 + lane < K) ? __ldg(&A[row * K + k0 + lane]) : 0.0f;
        for (int kk = 0; kk < 32 && k0 + kk < K; ++kk) {
            const float a = __shfl_sync(0xffffffffu, mine, kk);
            if (col < N) acc = fmaf(a, B[(k0 + kk) * N + col], acc);
        }
        ++tiles;
    }
    int total = tiles;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    if (total != 32 * tiles) acc = 0.0f;  // every lane must have taken part in every shuffle
    if (row < M && col < N) C[row * N + col] = acc;
}
