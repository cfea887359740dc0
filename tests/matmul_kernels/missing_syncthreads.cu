// Hostile: shared-memory tiling without the barrier between loading a tile and using it (a race).
constexpr int THREADS = 1024;
constexpr int BLOCK_M = 32;
constexpr int BLOCK_N = 32;
constexpr int SMEM_BYTES = 0;
constexpr int BK = 32;

extern "C" __global__ void matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    __shared__ float As[BLOCK_M][BK];
    __shared__ float Bs[BK][BLOCK_N];
    const int tr = threadIdx.x / BLOCK_N, tc = threadIdx.x % BLOCK_N;
    const int row = blockIdx.y * BLOCK_M + tr, col = blockIdx.x * BLOCK_N + tc;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BK) {
        As[tr][tc] = (row < M && k0 + tc < K) ? A[row * K + k0 + tc] : 0.0f;
        Bs[tr][tc] = (k0 + tr < K && col < N) ? B[(k0 + tr) * N + col] : 0.0f;
        for (int k = 0; k < BK; ++k) acc += As[tr][k] * Bs[k][tc];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}
