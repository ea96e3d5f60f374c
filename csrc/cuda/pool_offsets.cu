// CUDA kernels of the max-pool offset codec (see ../pool_offsets.h): pool_kernels.h on the CUDA
// launcher (launch.cuh: occupancy-sized grid, current stream, launch check).
#include <torch/library.h>

#include "launch.cuh"
#include "pool_kernels.h"

namespace ftprop {
namespace cuda {

TORCH_LIBRARY_IMPL(ftprop_cuda, CUDA, m) {
  m.impl("_pool_offsets_pack", &pool_offsets_pack_impl<Launcher>);
  m.impl("_pool_offsets_unpack", &pool_offsets_unpack_impl<Launcher>);
}

}  // namespace cuda
}  // namespace ftprop
