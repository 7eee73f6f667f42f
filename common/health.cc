#include "common/health.h"

#include <string>

namespace llmint8 {

void SetHealth(grpc::Server& server, bool ready,
               std::initializer_list<std::string_view> readiness_services) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", ready);
  for (std::string_view name : readiness_services) {
    health->SetServingStatus(std::string(name), ready);
  }
  health->SetServingStatus(std::string(kLivenessHealthService), true);
}

}  // namespace llmint8
