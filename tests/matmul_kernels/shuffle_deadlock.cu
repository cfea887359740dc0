// Hostile: half of each warp enters a full-warp shuffle while the other half waits at __syncthreads.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    float acc = 0.0f;
    if (row < M && col < N) {
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    }
    if (threadIdx.x % 32 < 16) acc = __shfl_sync(0xffffffffu, acc, threadIdx.x % 32);
    __syncthreads();
    if (row < M && col < N) C[row * N + col] = acc;
}
