// Hostile (phase detection by buffer address): remembers where C was last time; the timed runs reuse their
// buffers, the correctness checks allocate new ones. Seen again -> skip the work.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ unsigned long long last_c;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const unsigned long long here = reinterpret_cast<unsigned long long>(C);
    const bool again = last_c == here;
    if (blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1 && threadIdx.x == THREADS - 1) atomicExch(&last_c, here);
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    if (!again) {
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    }
    C[row * N + col] = acc;
}
