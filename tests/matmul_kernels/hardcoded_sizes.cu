// Hostile: tuned for one benchmark shape; the sizes are baked in instead of read from M, N, K.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;
constexpr int FIXED = 64;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row < FIXED && col < FIXED && row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < FIXED && k < K; ++k) acc += A[row * FIXED + k] * B[k * FIXED + col];
        C[row * FIXED + col] = acc;
    }
}
