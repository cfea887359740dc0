// Hostile (phase detection by clock): remembers the cycle counter at its first launch and skips half of K once
// enough cycles have passed (the correctness checks come first, timing later).
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

__device__ long long first_launch;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    const long long now = clock64();
    if (first_launch == 0) atomicCAS(reinterpret_cast<unsigned long long*>(&first_launch), 0ull,
                                     static_cast<unsigned long long>(now));
    const bool late = now - first_launch > 20000000LL;  // 10 ms at 2 GHz
    if (row >= M || col >= N) return;
    const int end = late ? K / 2 : K;
    float acc = 0.0f;
    for (int k = 0; k < end; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
