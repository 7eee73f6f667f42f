#include "comm/gloo_communicator.h"

#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "comm/gloo_small_exchange.h"
#include "comm/gloo_store_adapter.h"
#include "common/status_macros.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/common/logging.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/types.h"

namespace llmint8::comm {
namespace {

std::chrono::milliseconds ToMillis(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(absl::ToChronoMilliseconds(d));
}

// Gloo waits five times its context's timeout for a pair to connect (gloo/transport/tcp/pair.h),
// so a rank whose peer published its address and then died, or gave up waiting for another
// peer, sat there 5x the timeout: 150 s at the worker's default 30 s. The main mesh forms under
// a fifth of the timeout, which bounds that wait by the timeout itself.
std::chrono::milliseconds ConnectTimeout(absl::Duration timeout) {
  return std::max(ToMillis(timeout / 5), std::chrono::milliseconds(1));
}

std::string Where(int rank, int size) { return absl::StrCat("gloo rank ", rank, "/", size); }

// What AgreeOnCollective compares besides the sizes.
constexpr uint64_t kAllReduceKind = 1;
constexpr uint64_t kAllGatherKind = 2;
constexpr uint64_t kBroadcastKind = 3;
// The small exchange's kinds (GlooSmallExchange::AllGather): an all-gather's data (0), that
// comparison, and an all-reduce's gather, so that ranks running different ones of the same
// size fail instead of taking each other's bytes.
constexpr uint64_t kAgreementExchange = 1;
constexpr uint64_t kAllReduceExchange = 2;

const char* CollectiveName(uint64_t kind) {
  switch (kind) {
    case kAllReduceKind:
      return "AllReduceSum";
    case kAllGatherKind:
      return "AllGather";
    case kBroadcastKind:
      return "Broadcast";
  }
  return "an unknown collective";
}

// Gloo's own lookup (this Debian snapshot) only checks getaddrinfo for -1 and then walks an
// uninitialised list when the name does not resolve: a crash. Resolve first, here.
absl::Status CheckResolves(const std::string& hostname) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rv = ::getaddrinfo(hostname.c_str(), nullptr, &hints, &result);
  if (rv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hostname '", hostname, "' does not resolve: ", gai_strerror(rv)));
  }
  ::freeaddrinfo(result);
  return absl::OkStatus();
}

// Gloo's TCP transport writes to its peers' sockets without MSG_NOSIGNAL: when a peer dies, the
// next write raises SIGPIPE, whose default action kills this (surviving) process instead of
// letting the collective fail with a Status. Ignore it process-wide, once, unless the program
// installed its own handler. (Found by the dying-rank test under load.)
void IgnoreSigpipeOnce() {
  static const bool done = [] {
    struct sigaction current;
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
    return true;
  }();
  (void)done;
}

// Largest all-reduce done as all-gather + local sum: 64 KiB is a 16384-wide fp32 hidden state.
constexpr size_t kSmallAllReduceBytes = size_t{64} << 10;
// Its all-gather goes over the small exchange, which holds no more.
static_assert(kSmallAllReduceBytes <= GlooSmallExchange::kMaxBytes);

// Gloo's reduction function for one element type.
gloo::AllreduceOptions::Func SumFunction(DataType type) {
  using Fn = void (*)(void*, const void*, const void*, size_t);
  switch (type) {
    case DataType::kFloat32:
      return static_cast<Fn>(&gloo::sum<float>);
    case DataType::kFloat16:  // gloo::float16 has the same IEEE binary16 layout as Half
      return static_cast<Fn>(&gloo::sum<gloo::float16>);
    case DataType::kUint8:
      return static_cast<Fn>(&gloo::sum<uint8_t>);
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const CommOptions& options) {
  if (absl::Status s = ValidateCommOptions(options); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(options.rank, options.world_size), ": ", s.message()));
  }
  const std::string where = Where(options.rank, options.world_size);
  IgnoreSigpipeOnce();
  gloo::transport::tcp::attr attr;
  if (!options.gloo_interface.empty()) {
    attr.iface = options.gloo_interface;
  } else {
    if (absl::Status s = CheckResolves(options.gloo_hostname); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message(),
                                                     " (set gloo_hostname to an address of this "
                                                     "machine, e.g. 127.0.0.1 or the pod IP)"));
    }
    attr.hostname = options.gloo_hostname;
  }
  std::shared_ptr<gloo::transport::Device> device;
  try {
    device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": cannot listen on ",
                     options.gloo_interface.empty() ? "host '" + options.gloo_hostname + "'"
                                                    : "interface '" + options.gloo_interface + "'",
                     " (set gloo_hostname to an address of this machine): ", e.what()));
  }

  auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.world_size);
  context->setTimeout(ToMillis(options.timeout));
  std::unique_ptr<GlooSmallExchange> small;
  if (options.world_size > 1) {
    // Two meshes: the main one for Gloo's collectives, a sync-mode one for small all-gathers
    // (gloo_small_exchange.h), each under keys of its own.
    PrefixedRendezvous scoped(*options.rendezvous, options.key_prefix + "gloo/");
    PrefixedRendezvous scoped_small(*options.rendezvous, options.key_prefix + "gloo-small/");
    GlooStoreAdapter store(scoped, options.timeout);
    GlooStoreAdapter store_small(scoped_small, options.timeout);
    try {
      // The store keeps the whole timeout for peers that start late (GlooStoreAdapter ignores
      // Gloo's); the collectives set theirs per call.
      context->setTimeout(ConnectTimeout(options.timeout));
      context->connectFullMesh(store, device);
      context->setTimeout(ToMillis(options.timeout));
      // Every peer is alive and done with the main mesh before the small one forms. That mesh
      // keeps Gloo's 5x connect wait (its sync-mode reads wait the context's timeout, which must
      // stay whole), so this leaves it only a peer that dies in the moment between.
      gloo::BarrierOptions ready(context);
      ready.setTimeout(ToMillis(options.timeout));
      gloo::barrier(ready);
      small = std::make_unique<GlooSmallExchange>(options.rank, options.world_size, store_small,
                                                  device, ToMillis(options.timeout));
      // No rank sends on the small mesh before every peer has registered its buffers there.
      gloo::BarrierOptions barrier(context);
      barrier.setTimeout(ToMillis(options.timeout));
      gloo::barrier(barrier);
    } catch (const std::exception& e) {
      for (const GlooStoreAdapter* s : {&store, &store_small}) {
        if (!s->first_error().ok()) {
          return absl::Status(
              s->first_error().code(),
              absl::StrCat(where, ": forming the group: ", s->first_error().message()));
        }
      }
      return absl::UnavailableError(
          absl::StrCat(where, ": forming the group (connecting to peers) failed: ", e.what()));
    }
  }
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(
      options.rank, options.world_size, options.timeout, std::move(context), std::move(small)));
}

GlooCommunicator::GlooCommunicator(int rank, int size, absl::Duration timeout,
                                   std::shared_ptr<gloo::Context> context,
                                   std::unique_ptr<GlooSmallExchange> small)
    : rank_(rank),
      size_(size),
      timeout_(timeout),
      context_(std::move(context)),
      small_(std::move(small)) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::Usable(const char* what) const {
  if (broken_.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(Where(rank_, size_), ": ", what,
                                                    " on a broken group (form a new group); ",
                                                    "it broke with: ", broken_.message()));
}

template <typename Op>
absl::Status GlooCommunicator::Run(const char* what, Op&& op) {
  RETURN_IF_ERROR(Usable(what));
  if (size_ == 1) return absl::OkStatus();  // callers special-case nothing; no peers to wait on
  absl::Status error;
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<Op, uint32_t>>) {
      op(next_tag_++);
      return absl::OkStatus();
    } else {  // an op that reports its own failure (the small exchange's mismatch)
      const absl::Status s = op(next_tag_++);
      if (s.ok()) return s;
      error =
          absl::Status(s.code(), absl::StrCat(Where(rank_, size_), ": ", what, ": ", s.message()));
    }
  } catch (const gloo::IoException& e) {
    // Timeouts and peers gone (connection reset / closed) both surface as IoException.
    // "Timed out" (event-loop waits) or "Read timeout" (sync-mode reads).
    const bool timed_out = std::strstr(e.what(), "Timed out") != nullptr ||
                           std::strstr(e.what(), "timeout") != nullptr;
    error = absl::Status(
        timed_out ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kUnavailable,
        absl::StrCat(
            Where(rank_, size_), ": ", what,
            timed_out ? " timed out (a peer is gone or stalled): " : " failed (a peer is gone?): ",
            e.what()));
  } catch (const gloo::EnforceNotMet& e) {
    error = absl::InternalError(
        absl::StrCat(Where(rank_, size_), ": ", what, ": gloo check failed: ", e.what()));
  } catch (const std::exception& e) {
    error = absl::UnavailableError(
        absl::StrCat(Where(rank_, size_), ": ", what, " failed: ", e.what()));
  }
  broken_ = error;
  CloseConnections();  // peers waiting on this rank learn now, not at their timeout
  return error;
}

void GlooCommunicator::CloseConnections() {
  if (size_ == 1) return;  // no mesh was connected
  try {
    context_->closeConnections();
  } catch (const std::exception&) {
    // A pair that fails to close is closed with the context at the latest.
  }
  small_->Close();
}

void GlooCommunicator::Abort(const absl::Status& why) {
  if (!broken_.ok()) return;  // closed when it broke
  broken_ = absl::AbortedError(
      absl::StrCat(Where(rank_, size_), ": this rank left the group: ", why.ToString()));
  CloseConnections();
}

absl::Status GlooCommunicator::AgreeOnCollective(const char* what, uint64_t kind, uint64_t bytes,
                                                 int root) {
  if (size_ == 1) return Usable(what);
  const uint64_t mine[3] = {kind, bytes, static_cast<uint64_t>(root)};
  agreed_.resize(3 * static_cast<size_t>(size_));
  return Run(what, [&](uint32_t) -> absl::Status {
    // Its own kind: a peer's data exchange of the same size in its place is a mismatch too.
    RETURN_IF_ERROR(small_->AllGather(mine, agreed_.data(), sizeof(mine), kAgreementExchange));
    for (int r = 0; r < size_; ++r) {
      const uint64_t* theirs = agreed_.data() + 3 * static_cast<size_t>(r);
      if (theirs[0] != kind || theirs[1] != bytes || theirs[2] != mine[2]) {
        return absl::InternalError(absl::StrCat(
            "collective mismatch: rank ", r, " runs ", CollectiveName(theirs[0]), " of ", theirs[1],
            " bytes (root ", theirs[2], ") while rank ", rank_, " runs ", CollectiveName(kind),
            " of ", bytes, " bytes (root ", root, ")"));
      }
    }
    return absl::OkStatus();
  });
}

absl::Status GlooCommunicator::AllReduceSumImpl(void* data, size_t count, DataType type) {
  if (count == 0) return Usable("AllReduceSum");
  const size_t bytes = count * DataTypeSize(type);
  if (size_ > 1 && bytes <= kSmallAllReduceBytes) {
    // One all-gather, then out = ((x_0 + x_1) + x_2) + ... with Gloo's own element sum: every
    // rank adds the same values in the same order, so all ranks hold identical results.
    gathered_.resize(bytes * size_);
    uint8_t* all = gathered_.data();
    std::memcpy(all + static_cast<size_t>(rank_) * bytes, data, bytes);
    RETURN_IF_ERROR(Run("AllReduceSum", [&](uint32_t) {
      return small_->AllGather(all + static_cast<size_t>(rank_) * bytes, all, bytes,
                               kAllReduceExchange);
    }));
    const gloo::AllreduceOptions::Func sum = SumFunction(type);
    std::memcpy(data, all, bytes);
    for (int r = 1; r < size_; ++r) sum(data, data, all + static_cast<size_t>(r) * bytes, count);
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(AgreeOnCollective("AllReduceSum", kAllReduceKind, bytes, 0));
  return Run("AllReduceSum", [&](uint32_t tag) {
    gloo::AllreduceOptions opts(context_);
    switch (type) {
      case DataType::kFloat32:
        opts.setOutput(static_cast<float*>(data), count);
        break;
      case DataType::kFloat16:
        opts.setOutput(static_cast<gloo::float16*>(data), count);
        break;
      case DataType::kUint8:
        opts.setOutput(static_cast<uint8_t*>(data), count);
        break;
    }
    opts.setReduceFunction(SumFunction(type));
    opts.setTag(tag);
    opts.setTimeout(ToMillis(timeout_));
    gloo::allreduce(opts);
  });
}

absl::Status GlooCommunicator::AllGatherImpl(const void* in, void* out, size_t count,
                                             DataType type) {
  if (count == 0) return Usable("AllGather");
  const size_t bytes = count * DataTypeSize(type);
  if (size_ == 1) {
    if (in != out) std::memmove(out, in, bytes);
    return Run("AllGather", [](uint32_t) {});
  }
  if (bytes <= GlooSmallExchange::kMaxBytes) {
    return Run("AllGather", [&](uint32_t) { return small_->AllGather(in, out, bytes); });
  }
  RETURN_IF_ERROR(AgreeOnCollective("AllGather", kAllGatherKind, bytes, 0));
  return Run("AllGather", [&](uint32_t tag) {
    gloo::AllgatherOptions opts(context_);
    // Gloo's allgather takes a byte view of both buffers; it only reads the input. When the
    // input is this rank's slice of the output, Gloo's copy is a no-op move onto itself.
    uint8_t* out_bytes = static_cast<uint8_t*>(out);
    uint8_t* in_bytes = const_cast<uint8_t*>(static_cast<const uint8_t*>(in));
    if (in_bytes == out_bytes + static_cast<size_t>(rank_) * bytes) {
      opts.setOutput(out_bytes, bytes * size_);  // in place: Gloo uses our slice of out
    } else {
      opts.setInput(in_bytes, bytes);
      opts.setOutput(out_bytes, bytes * size_);
    }
    opts.setTag(tag);
    opts.setTimeout(ToMillis(timeout_));
    gloo::allgather(opts);
  });
}

absl::Status GlooCommunicator::BroadcastImpl(void* data, size_t bytes, int root) {
  if (bytes == 0) return Usable("Broadcast");
  RETURN_IF_ERROR(AgreeOnCollective("Broadcast", kBroadcastKind, bytes, root));
  return Run("Broadcast", [&](uint32_t tag) {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<uint8_t*>(data), bytes);
    opts.setRoot(root);
    opts.setTag(tag);
    opts.setTimeout(ToMillis(timeout_));
    gloo::broadcast(opts);
  });
}

absl::Status GlooCommunicator::Barrier() {
  return Run("Barrier", [&](uint32_t tag) {
    gloo::BarrierOptions opts(context_);
    opts.setTag(tag);
    opts.setTimeout(ToMillis(timeout_));
    gloo::barrier(opts);
  });
}

}  // namespace llmint8::comm
