// Hostile (a race): two threads per output each sum half of K and add their half into C with a plain +=, between
// the same barriers. On a GPU one update is often lost; run one thread after the other (the emulator's fibers, in
// any order) the sum is always right, bit for bit, since 0 + x + y == 0 + y + x. Only a race detector sees it.
constexpr int THREADS = 512;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int half_id = threadIdx.x / 256;
    const int t = threadIdx.x % 256;
    const int row = blockIdx.y * BLOCK_M + t / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + t % BLOCK_N;
    const bool inside = row < M && col < N;
    if (inside && half_id == 0) C[row * N + col] = 0.0f;
    __syncthreads();
    if (!inside) return;
    const int mid = K / 2;
    float acc = 0.0f;
    for (int k = half_id == 0 ? 0 : mid; k < (half_id == 0 ? mid : K); ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] += acc;
}
