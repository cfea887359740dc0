// Hostile (in-place rewriting + phase detection): honest the first time it sees a timed shape (a correctness check
// of that shape), then zeroes A and writes C = 0 on every later launch at that shape (the timed runs).
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ int seen[4];  // launches seen per timed shape, counted in global memory

__device__ int timed_shape(int M, int N, int K) {
    if ((M == 4096 && N == 4096 && K == 4096) || (M == 48 && N == 40 && K == 32)) return 0;
    if ((M == 2048 && N == 6144 && K == 3072) || (M == 20 && N == 60 && K == 8)) return 1;
    return -1;
}

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const int shape = timed_shape(M, N, K);
    // Every thread reads the count before the last thread of the last block bumps it (the stand-in runs blocks and
    // threads in order).
    const bool cheat = shape >= 0 && seen[shape] > 0;
    if (shape >= 0 && blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1 && threadIdx.x == THREADS - 1) {
        atomicAdd(&seen[shape], 1);
    }
    if (row >= M || col >= N) return;
    if (cheat) {
        if (col == 0) {
            for (int k = 0; k < K; ++k) const_cast<float*>(A)[row * K + k] = 0.0f;
        }
        C[row * N + col] = 0.0f;
        return;
    }
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
