// Hostile (include trick): C++14 digit separators look like the start of a character literal to a text scanner, which
// then takes the '/*' below for the start of a comment and skips the #include hidden in it; the compiler reads a
// number and a multi-character literal, and includes <stdio.h>.
constexpr int THREADS = 256;
constexpr int BLOCK_M = 16;
constexpr int BLOCK_N = 16;
constexpr int SMEM_BYTES = 0;
constexpr long long kPadding = 1'2 + '/*';
#include <stdio.h>
// */

extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
    const int row = blockIdx.y * BLOCK_M + threadIdx.x / BLOCK_N;
    const int col = blockIdx.x * BLOCK_N + threadIdx.x % BLOCK_N;
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}
