// Hostile (emulator detection by an API it lacks): one warp-reduction intrinsic the emulator does not have turns
// its check off; the kernel is wrong on the GPU (it drops the last row of every tile's K range when K > 64).
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const unsigned int lanes = __reduce_add_sync(0xffffffffu, 1u);  // 32 on a GPU; the emulator cannot build this
    if (row >= M || col >= N) return;
    const int end = K > 64 ? K - static_cast<int>(lanes) / 32 : K;
    float acc = 0.0f;
    for (int k = 0; k < end; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
