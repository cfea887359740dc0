// Honest (a control for the bench's launch): 40 KiB of static and 16 KiB of dynamic shared memory. Dynamic alone is
// under the 48 KiB default, the total is not: the bench must opt in from static + dynamic or the launch fails.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 16384;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    __shared__ float staged[10240];  // 40 KiB: each thread's result, 40 floats apart
    extern __shared__ float spill[];  // 16 KiB
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    float acc = 0.0f;
    if (row < M && col < N) {
        for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    }
    spill[threadIdx.x * 16] = acc;
    staged[threadIdx.x * 40] = spill[threadIdx.x * 16];
    __syncthreads();
    if (row < M && col < N) C[row * N + col] = staged[threadIdx.x * 40];
}
