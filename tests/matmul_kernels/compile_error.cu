// Hostile: does not compile (undeclared identifier, missing semicolon).
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row < M && col < N) C[row * N + col] = accumulator;
}
