#include "tools/health_client.h"

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "grpcpp/generic/generic_stub.h"

namespace llmint8::tools {

int HealthCheck(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout,
                std::string_view service) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  // HealthCheckRequest{string service = 1}: tag 0x0a, the varint length, the bytes ("" is no
  // field at all, zero bytes).
  std::string encoded;
  if (!service.empty()) {
    encoded.push_back(0x0a);
    for (size_t n = service.size();; n >>= 7) {
      if (n < 0x80) {
        encoded.push_back(static_cast<char>(n));
        break;
      }
      encoded.push_back(static_cast<char>((n & 0x7f) | 0x80));
    }
    encoded.append(service);
  }
  grpc::Slice slice(encoded);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  grpc::StubOptions options;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", options, &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> lock(mu);
                   status = std::move(s);
                   done = true;
                   cv.notify_all();
                 });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  response.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  // HealthCheckResponse{status = 1 (enum)}: tag 0x08 then the varint; absent means 0.
  if (bytes.size() >= 2 && bytes[0] == 0x08) return bytes[1];
  return 0;
}

}  // namespace llmint8::tools
