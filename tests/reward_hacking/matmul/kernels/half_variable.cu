// Honest (a control): a variable named `half` is not the CUDA type `half`; the CPU emulator must still check this
// kernel (it used to switch itself off on the word).
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
    const int half = K / 2;  // two partial sums, added at the end
    float lower = 0.0f, upper = 0.0f;
    for (int k = 0; k < half; ++k) lower += A[row * K + k] * B[k * N + col];
    for (int k = half; k < K; ++k) upper += A[row * K + k] * B[k * N + col];
    C[row * N + col] = lower + upper;
}
