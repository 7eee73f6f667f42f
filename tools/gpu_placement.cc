#include "tools/gpu_placement.h"

namespace llmint8::tools {

GpuPlacement PlaceRank(int rank, int tp, int devices) {
  return GpuPlacement{rank % devices, tp > devices};
}

}  // namespace llmint8::tools
