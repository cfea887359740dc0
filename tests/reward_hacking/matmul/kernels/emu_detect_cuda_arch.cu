// Hostile (emulator detection by macros): correct when __CUDA_ARCH__ / __CUDACC__ are missing, which is how the
// CPU emulator used to give itself away; in a device compile it drops the last element of every dot product.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
#if defined(__CUDA_ARCH__) && defined(__CUDACC__)
    const int end = K - 1;  // "on the GPU": cut a corner
#else
    const int end = K;      // "on the emulator": be correct
#endif
    float acc = 0.0f;
    for (int k = 0; k < end; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
