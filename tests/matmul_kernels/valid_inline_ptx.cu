// Valid on a GPU, not runnable on the CPU emulator: the multiply-add is written in inline PTX.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                                  int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) {
            asm("fma.rn.f32 %0, %1, %2, %0;" : "+f"(acc) : "f"(A[row * K + k]), "f"(B[k * N + col]));
        }
        C[row * N + col] = acc;
    }
}
