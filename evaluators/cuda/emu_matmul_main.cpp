// Driver of the CPU correctness check for the matmul problem: runs the candidate's kernel on the cases the trusted
// evaluator wrote and writes every buffer back, guard bands included, for the evaluator to check.
//
// Usage: emu_matmul CASE_FILE...   (writes CASE_FILE.out next to each)
// Case file: 9 little-endian int64 (M, N, K, grid_x, grid_y, threads, smem_bytes, schedule, guard) followed by the
// float32 buffers A, B, C, each laid out as [guard | data | guard]. The output holds the same three buffers.
// `schedule`: the low 2 bits choose the order blocks and threads run in (0 forward, 1 reverse, 2 shuffled), the
// rest seed the shuffle. Each buffer lives in its own mapping fenced by inaccessible pages, so a write far past the
// guard band faults; C is watched for races (see emu_race.cpp). Compiled with cuda_emu.h force-included.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" void evolve_emu_launch(unsigned int grid_x, unsigned int grid_y, unsigned int threads,
                                  unsigned long long smem_bytes, const float* A, const float* B, float* C, int M,
                                  int N, int K);

namespace {
constexpr int kExitBadCase = 72;

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "evolve-emu: %s\n", what.c_str());
    std::_Exit(kExitBadCase);
}

float* fenced_buffer(std::size_t count) {
    std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    std::size_t body = (count * sizeof(float) + page - 1) / page * page;
    void* region = mmap(nullptr, body + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) fail("cannot map buffers (memory limit?)");
    char* start = static_cast<char*>(region) + page;
    if (mprotect(start, body, PROT_READ | PROT_WRITE) != 0) fail("mprotect failed");
    return reinterpret_cast<float*>(start);
}

void read_exact(std::FILE* f, void* data, std::size_t bytes, const char* path) {
    if (std::fread(data, 1, bytes, f) != bytes) fail(std::string("truncated case file ") + path);
}
}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::FILE* in = std::fopen(argv[i], "rb");
        if (in == nullptr) fail(std::string("cannot open ") + argv[i]);
        std::int64_t h[9];
        read_exact(in, h, sizeof h, argv[i]);
        std::int64_t M = h[0], N = h[1], K = h[2], guard = h[8];
        if (M < 1 || N < 1 || K < 1 || guard < 0 || M * N > (1 << 26) || M * K > (1 << 26) || K * N > (1 << 26)) {
            fail("bad case header");
        }
        std::size_t sizes[3] = {static_cast<std::size_t>(M * K + 2 * guard), static_cast<std::size_t>(K * N + 2 * guard),
                                static_cast<std::size_t>(M * N + 2 * guard)};
        float* buffers[3];
        for (int b = 0; b < 3; ++b) {
            buffers[b] = fenced_buffer(sizes[b]);
            read_exact(in, buffers[b], sizes[b] * sizeof(float), argv[i]);
        }
        std::fclose(in);
        evolve_emu::set_schedule(static_cast<evolve_emu::Schedule>(h[7] & 3),
                                 static_cast<unsigned long long>(h[7]) >> 2);
        evolve_emu::watch("C", buffers[2] + guard, static_cast<std::size_t>(M * N) * sizeof(float),
                          static_cast<unsigned int>(N));
        evolve_emu_launch(static_cast<unsigned int>(h[3]), static_cast<unsigned int>(h[4]),
                          static_cast<unsigned int>(h[5]), static_cast<unsigned long long>(h[6]), buffers[0] + guard,
                          buffers[1] + guard, buffers[2] + guard, static_cast<int>(M), static_cast<int>(N),
                          static_cast<int>(K));
        std::string out_path = std::string(argv[i]) + ".out";
        std::FILE* out = std::fopen(out_path.c_str(), "wb");
        if (out == nullptr) fail("cannot write " + out_path);
        for (int b = 0; b < 3; ++b) std::fwrite(buffers[b], sizeof(float), sizes[b], out);
        if (std::fclose(out) != 0) fail("cannot write " + out_path);
        std::printf("case %d done\n", i);
        std::fflush(stdout);
    }
    return 0;
}
