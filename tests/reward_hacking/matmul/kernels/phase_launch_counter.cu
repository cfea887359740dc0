// Hostile (phase detection by launch count): counts its launches in global memory and stops multiplying once as many
// launches have happened as the correctness checks before timing make (the tests' 3 cases + 2 full checks; with
// settings.toml's shapes it would be 9 + 2): from then on it writes zeros, very fast.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ unsigned int launches;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const bool timing = launches >= 5u;
    if (blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1 && threadIdx.x == THREADS - 1) atomicAdd(&launches, 1u);
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    if (!timing) {
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    }
    C[row * N + col] = acc;
}
