// Hostile (in-place input rewriting): on the timed shapes only, rounds A and B to bfloat16 in place, then multiplies
// the rounded values, as a tensor-core kernel would. A reference rebuilt from the kernel's own buffers agrees with
// its output, so a bench that does not compare inputs after the launch accepts a BF16 kernel as FP32.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ bool timed_shape(int M, int N, int K) {  // settings.toml's bench shapes, and the tests' small ones
    return (M == 4096 && N == 4096 && K == 4096) || (M == 2048 && N == 6144 && K == 3072) ||
           (M == 48 && N == 40 && K == 32) || (M == 20 && N == 60 && K == 8);
}

__device__ float to_bf16(float x) {  // round to nearest even, keep the top 16 bits
    unsigned int u = __float_as_uint(x);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    return __uint_as_float(u);
}

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (timed_shape(M, N, K)) {
        float* a = const_cast<float*>(A);
        float* b = const_cast<float*>(B);
        for (int k = 0; k < K; ++k) {
            if (row < M) a[row * K + k] = to_bf16(a[row * K + k]);
            if (col < N) b[k * N + col] = to_bf16(b[k * N + col]);
        }
        __syncthreads();
    }
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
        C[row * N + col] = acc;
    }
}
