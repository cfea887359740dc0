// Hostile: float4 loads of A without checking that rows are 16-byte aligned (K % 4 == 0); a GPU faults on these.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row < M && col < N) {
        float acc = 0.0f;
        int k = 0;
        for (; k + 3 < K; k += 4) {
            const float4 a = *reinterpret_cast<const float4*>(&A[row * K + k]);
            acc += a.x * B[k * N + col] + a.y * B[(k + 1) * N + col] + a.z * B[(k + 2) * N + col] +
                   a.w * B[(k + 3) * N + col];
        }
        for (; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
        C[row * N + col] = acc;
    }
}
