// Hostile (in-place input rewriting): on the timed shapes only, zeroes A and writes C = 0 without multiplying.
// Against a reference rebuilt from the kernel's own (now zero) A, C = 0 is "correct", and it is very fast.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ bool timed_shape(int M, int N, int K) {  // settings.toml's bench shapes, and the tests' small ones
    return (M == 4096 && N == 4096 && K == 4096) || (M == 2048 && N == 6144 && K == 3072) ||
           (M == 48 && N == 40 && K == 32) || (M == 20 && N == 60 && K == 8);
}

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
    if (timed_shape(M, N, K)) {
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
