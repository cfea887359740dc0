// Rung 6: vectorized memory access. The 2-D block-tiled kernel with 128-bit (float4) loads of A and B and stores
// of C where rows are 16-byte aligned (K and N multiples of 4), A transposed into shared memory on the way, and
// the tiles in dynamic shared memory. Other shapes take the scalar path, so every M, N, K stays correct.
// Program format: see ../README.md.

// EVOLVE-BLOCK-START
constexpr int THREADS = 256;
constexpr int BLOCK_M = 128;
constexpr int BLOCK_N = 128;
constexpr int SMEM_BYTES = 8192;
constexpr int BK = 8;
constexpr int TM = 8;
constexpr int TN = 8;
static_assert(THREADS * TM * TN == BLOCK_M * BLOCK_N, "each thread owns a TM x TN sub-tile");
static_assert(BLOCK_M % TM == 0 && BLOCK_N % TN == 0, "sub-tiles must tile the block's tile");
static_assert(BK % 4 == 0 && BLOCK_M % 4 == 0 && BLOCK_N % 4 == 0 && TM % 4 == 0 && TN % 4 == 0,
              "float4 accesses need multiples of 4");
static_assert(SMEM_BYTES == (BK * BLOCK_M + BK * BLOCK_N) * 4, "SMEM_BYTES must hold both tiles");

extern "C" __global__ void __launch_bounds__(THREADS)
matmul(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    extern __shared__ __align__(16) float smem[];
    float* As = smem;                 // [BK][BLOCK_M], A transposed
    float* Bs = smem + BK * BLOCK_M;  // [BK][BLOCK_N]
    const int m0 = blockIdx.y * BLOCK_M;
    const int n0 = blockIdx.x * BLOCK_N;
    const int tr = threadIdx.x / (BLOCK_N / TN) * TM;
    const int tc = threadIdx.x % (BLOCK_N / TN) * TN;
    const bool a_vec = K % 4 == 0;  // rows of A start 16-byte aligned
    const bool b_vec = N % 4 == 0;  // rows of B and C start 16-byte aligned
    float acc[TM][TN] = {{0.0f}};
    float a_reg[TM];
    float b_reg[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int i = threadIdx.x; i < BLOCK_M * BK / 4; i += THREADS) {
            const int r = i / (BK / 4), c = i % (BK / 4) * 4;
            const int gr = m0 + r, gc = k0 + c;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (a_vec && gr < M && gc + 3 < K) {
                v = *reinterpret_cast<const float4*>(&A[gr * K + gc]);
            } else if (gr < M) {
                v.x = gc < K ? A[gr * K + gc] : 0.0f;
                v.y = gc + 1 < K ? A[gr * K + gc + 1] : 0.0f;
                v.z = gc + 2 < K ? A[gr * K + gc + 2] : 0.0f;
                v.w = gc + 3 < K ? A[gr * K + gc + 3] : 0.0f;
            }
            As[(c + 0) * BLOCK_M + r] = v.x;
            As[(c + 1) * BLOCK_M + r] = v.y;
            As[(c + 2) * BLOCK_M + r] = v.z;
            As[(c + 3) * BLOCK_M + r] = v.w;
        }
        for (int i = threadIdx.x; i < BK * BLOCK_N / 4; i += THREADS) {
            const int r = i / (BLOCK_N / 4), c = i % (BLOCK_N / 4) * 4;
            const int gr = k0 + r, gc = n0 + c;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (b_vec && gr < K && gc + 3 < N) {
                v = *reinterpret_cast<const float4*>(&B[gr * N + gc]);
            } else if (gr < K) {
                v.x = gc < N ? B[gr * N + gc] : 0.0f;
                v.y = gc + 1 < N ? B[gr * N + gc + 1] : 0.0f;
                v.z = gc + 2 < N ? B[gr * N + gc + 2] : 0.0f;
                v.w = gc + 3 < N ? B[gr * N + gc + 3] : 0.0f;
            }
            *reinterpret_cast<float4*>(&Bs[r * BLOCK_N + c]) = v;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; i += 4) {
                const float4 a = *reinterpret_cast<const float4*>(&As[k * BLOCK_M + tr + i]);
                a_reg[i] = a.x;
                a_reg[i + 1] = a.y;
                a_reg[i + 2] = a.z;
                a_reg[i + 3] = a.w;
            }
#pragma unroll
            for (int j = 0; j < TN; j += 4) {
                const float4 b = *reinterpret_cast<const float4*>(&Bs[k * BLOCK_N + tc + j]);
                b_reg[j] = b.x;
                b_reg[j + 1] = b.y;
                b_reg[j + 2] = b.z;
                b_reg[j + 3] = b.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i) {
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    acc[i][j] += a_reg[i] * b_reg[j];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int gr = m0 + tr + i;
        if (gr >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; j += 4) {
            const int gc = n0 + tc + j;
            if (b_vec && gc + 3 < N) {
                *reinterpret_cast<float4*>(&C[gr * N + gc]) =
                    make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
            } else {
                for (int jj = 0; jj < 4 && gc + jj < N; ++jj) {
                    C[gr * N + gc + jj] = acc[i][j + jj];
                }
            }
        }
    }
}
// EVOLVE-BLOCK-END
