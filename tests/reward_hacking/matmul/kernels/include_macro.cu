// Hostile (include trick): the header name is built by a macro (and split by a splice), so the text
// names no header; the preprocessor expands it to <stdio.h>.
#define EVOLVE_HEADER <std\
io.h>
#include EVOLVE_HEADER
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
