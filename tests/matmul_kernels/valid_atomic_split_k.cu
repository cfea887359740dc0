// Valid: two threads per output each sum half of K and add it into C with atomicAdd, after one of them zeroed it
// behind a barrier. The result's rounding depends on which add comes first (as on a GPU), within the tolerance;
// atomics never race, so the emulator's race detector must accept it.
constexpr int THREADS = 512;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int part = threadIdx.x / 256;
    const int t = threadIdx.x % 256;
    const int row = blockIdx.y * BLOCK_M + t / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + t % BLOCK_N;
    const bool inside = row < M && col < N;
    if (inside && part == 0) C[row * N + col] = 0.0f;
    __syncthreads();
    if (!inside) return;
    const int mid = K / 2;
    float acc = 0.0f;
    for (int k = part == 0 ? 0 : mid; k < (part == 0 ? mid : K); ++k) acc += A[row * K + k] * B[k * N + col];
    atomicAdd(&C[row * N + col], acc);
}
