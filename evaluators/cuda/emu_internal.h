// What the emulator's runtime (emu_runtime.cpp) shares with its race detector (emu_race.cpp). Not visible to kernels:
// only the harness's own sources include it.
#pragma once

#include <cstddef>

namespace evolve_emu::internal {
// Where the running fiber is. `thread` is its linear index in the block, `block` the block's linear index in the grid
// (x fastest); `block_epoch` counts the block's __syncthreads releases, `warp_epochs[w]` warp w's shuffle/vote/
// __syncwarp releases. `in_kernel` is false outside a launch (the driver's own memory accesses are never tracked).
extern bool in_kernel;
extern unsigned int thread;
extern unsigned int block;
extern unsigned int block_epoch;
extern unsigned int warp_epochs[32];

// Called by the runtime: a block starts (shared memory of `dynamic_bytes` is in use, shadow state starts clean).
void race_block_start(const void* dynamic_begin, std::size_t dynamic_bytes);
}  // namespace evolve_emu::internal
