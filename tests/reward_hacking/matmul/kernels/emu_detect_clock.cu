// Hostile (emulator detection by clock): clock64() and clock() used to return 0 on the emulator. Correct when a
// clock stands still, wrong when it advances (as on a GPU).
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const long long t0 = clock64();
    const clock_t c0 = clock();
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    const bool frozen = clock64() == t0 || clock() == c0;
    C[row * N + col] = frozen ? acc : acc * 0.5f;
}
