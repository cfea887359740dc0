// Hostile: the loop step is computed from the data and is 0 for inputs in [-1, 1], so the kernel never returns.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const int step = A[0] > 2.0f ? 1 : 0;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; k += step) {
            acc += A[row * K + k] * B[k * N + col];
            C[row * N + col] = acc;  // a side effect in the loop: the compiler may not assume it ends
        }
    }
}
