// Hostile (phase detection by shape): exact FP32 on every shape but the timed ones, where it multiplies
// BF16-rounded inputs (what a tensor-core kernel would do to go faster), without touching A or B.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ bool timed_shape(int M, int N, int K) {
    return (M == 4096 && N == 4096 && K == 4096) || (M == 2048 && N == 6144 && K == 3072) ||
           (M == 48 && N == 40 && K == 32) || (M == 20 && N == 60 && K == 8);
}

__device__ float to_bf16(float x) {
    return __uint_as_float((__float_as_uint(x) + 0x7FFFu + ((__float_as_uint(x) >> 16) & 1u)) & 0xFFFF0000u);
}

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
    const bool low = timed_shape(M, N, K);
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float a = A[row * K + k], b = B[k * N + col];
        acc += low ? to_bf16(a) * to_bf16(b) : a * b;
    }
    C[row * N + col] = acc;
}
