#include "tests/e2e/cluster.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file.h"
#include "grpcpp/generic/generic_stub.h"
#include "tools/health_client.h"

extern char** environ;

namespace llmint8::e2e {

std::string LlmintBinary() {
  const char* dir = std::getenv("LLMINT8_BINARY_DIR");
  return absl::StrCat(dir != nullptr ? dir : ".", "/tools/llmint8");
}

std::string SourcePath(const std::string& relative) {
  const char* dir = std::getenv("LLMINT8_SOURCE_DIR");
  return absl::StrCat(dir != nullptr ? dir : ".", "/", relative);
}

namespace {

// Tests that run in parallel (ctest -j) each pick ports. Asking the kernel for an ephemeral
// port and closing it lets another test, or any process's outgoing connection, take the same
// port before our server binds it. So ports come from below the ephemeral range, and each is
// reserved for the life of this process by an flock on <tmp>/llmint8-ports/<port>: every
// test process skips a port another holds (the lock goes when its holder exits; the empty
// files stay, as removing one could race with a process about to lock it).
constexpr int kFirstPort = 20000;

int EphemeralLow() {
  int low = 32768;
  std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f != nullptr) {
    if (std::fscanf(f, "%d", &low) != 1) low = 32768;
    std::fclose(f);
  }
  return low;
}

// Binds a loopback TCP socket to `port` (0: the kernel's pick), closes it and returns the
// port it got; -1 when it cannot bind.
int BindLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(addr);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  return ok ? ntohs(addr.sin_port) : -1;
}

bool CanBind(int port) { return BindLoopback(port) == port; }

// The lock of `port`, held while the returned descriptor is open; -1 if another process
// holds it (or the file cannot be opened).
int Reserve(const std::filesystem::path& dir, int port) {
  const std::string path = dir / std::to_string(port);
  // Read-only is enough for flock, and lets another user's tests lock a file made by ours. An
  // existing file is opened without O_CREAT: with fs.protected_regular, O_CREAT on another
  // user's file in a sticky directory fails even read-only.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) fd = open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Whether `count` ports from `first` can be bound now (nothing reserves them).
bool CanBindAll(int first, int count) {
  for (int p = first; p < first + count; ++p) {
    if (p > 65535 || !CanBind(p)) return false;
  }
  return true;
}

// The kernel's pick, unreserved: the fallback when no range below the ephemeral ports exists.
// For count > 1 the ports after it must be free too; -1 when 100 picks had no such run.
int KernelPort(int count) {
  for (int tries = 0; tries < 100; ++tries) {
    const int port = BindLoopback(0);
    if (port > 0 && CanBindAll(port, count)) return port;
  }
  return -1;
}

// FreePort without the abort: -1 when there are no such ports.
int PickPort(int count) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const int end = std::min(EphemeralLow(), 65536);  // the first port past the range
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "llmint8-ports";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // Shared by every user's tests, like /tmp itself (fails harmlessly if another user made it).
  std::filesystem::permissions(
      dir, std::filesystem::perms::all | std::filesystem::perms::sticky_bit, ec);
  if (count < 1 || end - count <= kFirstPort || !std::filesystem::is_directory(dir)) {
    return KernelPort(count);
  }
  // Parallel test processes start their search at different places (a prime stride spreads
  // consecutive pids over the range).
  static int next = kFirstPort + static_cast<int>(getpid() * 7919L % (end - kFirstPort));
  for (int tries = 0; tries < end - kFirstPort; tries += count) {
    if (next + count > end) next = kFirstPort;
    const int first = next;
    next += count;
    std::vector<int> held;
    bool ok = true;
    for (int p = first; p < first + count && ok; ++p) {
      const int fd = Reserve(dir, p);
      if (fd >= 0) held.push_back(fd);
      ok = fd >= 0 && CanBind(p);
    }
    if (ok) return first;  // the descriptors stay open: the locks last as long as this process
    for (const int fd : held) close(fd);  // a block that failed frees what it locked
  }
  return KernelPort(count);
}

}  // namespace

int FreePort(int count) {
  const int port = PickPort(count);
  if (port < 0) {
    std::fprintf(stderr, "FreePort: no %d free consecutive loopback port(s)\n", count);
    std::abort();  // a test cannot run without its ports
  }
  return port;
}

Process::Process(std::vector<std::string> args, std::string log_path, std::vector<std::string> env,
                 const std::string& cwd) {
  args.insert(args.begin(), std::filesystem::absolute(LlmintBinary()).string());
  // Built before fork: the child of a multi-threaded process may only exec.
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).substr(0, 16) != "LLMINT8_API_KEY=") env.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
}

Process::~Process() { Kill(SIGTERM); }

void Process::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

int Process::WaitForExit(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    if (std::chrono::steady_clock::now() >= until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

void Process::Kill(int signal) {
  if (pid_ <= 0) return;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)) {
  log_dir_ = std::filesystem::temp_directory_path() /
             absl::StrCat("llmint8_e2e_", getpid(), "_", FreePort());
  std::filesystem::create_directories(log_dir_);
  const int port = FreePort();
  address_ = absl::StrCat("127.0.0.1:", port);
  std::vector<std::string> addresses;
  for (int i = 0; i < options_.workers; ++i) {
    worker_ports_.push_back(FreePort());
    addresses.push_back(worker_address(i));
  }
  if (options_.list_worker0_twice && options_.workers > 0) {
    addresses.push_back(absl::StrCat("localhost:", worker_ports_[0]));
  }
  workers_.resize(options_.workers);
  if (options_.start_workers) {
    for (int i = 0; i < options_.workers; ++i) StartWorker(i);
  }
  coordinator_args_ = {"coordinator", absl::StrCat("--listen=", address_),
                       absl::StrCat("--workers=", absl::StrJoin(addresses, ",")),
                       absl::StrCat("--model=", options_.model),
                       absl::StrCat("--dtype=", options_.dtype)};
  for (const std::string& f : options_.extra_coordinator_flags) coordinator_args_.push_back(f);
  coordinator_ = std::make_unique<Process>(coordinator_args_, log_dir_ + "/coordinator.log",
                                           options_.coordinator_env, options_.coordinator_cwd);
  std::fprintf(stderr, "cluster logs in %s\n", log_dir_.c_str());
}

void Cluster::RestartCoordinator(int signal) {
  coordinator_->Kill(signal);
  coordinator_ = std::make_unique<Process>(coordinator_args_, log_dir_ + "/coordinator.log",
                                           options_.coordinator_env, options_.coordinator_cwd);
}

Cluster::~Cluster() {
  coordinator_.reset();
  workers_.clear();
}

std::string Cluster::worker_address(int rank) const {
  return absl::StrCat("127.0.0.1:", worker_ports_[rank]);
}

void Cluster::StartWorker(int rank, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"worker", absl::StrCat("--listen=", worker_address(rank))};
  for (const std::string& f : options_.extra_worker_flags) args.push_back(f);
  for (const std::string& f : extra) args.push_back(f);
  const std::string cwd =
      static_cast<size_t>(rank) < options_.worker_cwds.size() ? options_.worker_cwds[rank] : "";
  workers_[rank] = std::make_unique<Process>(args, absl::StrCat(log_dir_, "/worker", rank, ".log"),
                                             std::vector<std::string>{}, cwd);
}

void Cluster::KillWorker(int rank, int signal) {
  if (workers_[rank]) workers_[rank]->Kill(signal);
}

std::unique_ptr<v1::Generation::Stub> Cluster::NewStub() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::Generation::NewStub(
      grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args));
}

std::unique_ptr<v1::Worker::Stub> Cluster::NewWorkerStub(int rank) const {
  return v1::Worker::NewStub(
      grpc::CreateChannel(worker_address(rank), grpc::InsecureChannelCredentials()));
}

absl::StatusOr<v1::StatsResponse> Cluster::WorkerStats(int rank) const {
  grpc::ClientContext ctx;
  v1::StatsResponse resp;
  const grpc::Status s = NewWorkerStub(rank)->Stats(&ctx, v1::StatsRequest(), &resp);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("Stats of worker ", rank, ": ", s.error_message()));
  }
  return resp;
}

int64_t Cluster::WorkerTokens() const {
  const absl::StatusOr<v1::StatsResponse> stats = WorkerStats(0);
  return stats.ok() ? static_cast<int64_t>(stats->tokens()) : -1;
}

int64_t Cluster::WorkerSteps() const {
  const absl::StatusOr<v1::StatsResponse> stats = WorkerStats(0);
  return stats.ok() ? static_cast<int64_t>(stats->steps()) : -1;
}

bool WaitForLogLine(const std::string& path, const std::string& text, double seconds, int times) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    const std::string log = ReadFileToString(path).value_or("");
    int found = 0;
    for (size_t at = log.find(text); at != std::string::npos && found < times;
         at = log.find(text, at + text.size())) {
      ++found;
    }
    if (found >= times) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string Cluster::CoordinatorLog() const {
  return ReadFileToString(log_dir_ + "/coordinator.log").value_or("");
}

int64_t Cluster::ActiveSequences() const {
  int64_t total = 0;
  for (int rank = 0; rank < options_.workers; ++rank) {
    absl::StatusOr<v1::StatsResponse> stats = WorkerStats(rank);
    if (!stats.ok()) return -1;
    total += stats->active_sequences();
  }
  return total;
}

bool Cluster::WaitActiveSequences(int64_t n) const {
  for (int i = 0; i < 100; ++i) {
    if (ActiveSequences() == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

absl::StatusOr<std::string> RunAndRead(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(absl::StrCat("cannot run: ", command));
  std::string output;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  const int status = pclose(pipe);
  if (status != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` exited with ", status, ": ", output));
  }
  return output;
}

absl::StatusOr<std::string> OpenAiSdkPython() {
  const char* env = std::getenv("LLMINT8_TEST_VENV");
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const std::string cache = xdg != nullptr    ? xdg
                            : home != nullptr ? absl::StrCat(home, "/.cache")
                                              : "";
  const std::string venv = env != nullptr   ? env
                           : !cache.empty() ? absl::StrCat(cache, "/llmint8/test-venv")
                                            : "";
  const std::string python = venv + "/bin/python";
  if (venv.empty() || std::system((python + " -c 'import openai' 2>/dev/null").c_str()) != 0) {
    return absl::NotFoundError(
        absl::StrCat("no virtualenv with the openai package at ", venv,
                     " (bash scripts/openai-venv.sh makes it; scripts/test.sh runs that)"));
  }
  return python;
}

int HealthStatus(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials,
                 const std::string& service) {
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  return tools::HealthCheck(grpc::CreateChannel(address, credentials), absl::Seconds(2), service);
}

bool WaitForHealth(const std::string& address, int want, double seconds,
                   std::shared_ptr<grpc::ChannelCredentials> credentials) {
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < end) {
    if (HealthStatus(address, credentials) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

namespace {

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  buffer.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

// Reads a protobuf varint at `pos`; advances it.
uint64_t ReadVarint(const std::string& b, size_t& pos) {
  uint64_t v = 0;
  for (int shift = 0; pos < b.size() && shift < 64; shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(b[pos++]);
    v |= uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80) == 0) break;
  }
  return v;
}

}  // namespace

std::vector<std::string> ReflectionServices(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue cq;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t want) {
    return cq.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == want;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return {};
  // ServerReflectionRequest{list_services: ""}: field 7, length-delimited, empty.
  const char request_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(request_bytes, sizeof(request_bytes));
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  if (!step(2)) return {};
  call->WritesDone(reinterpret_cast<void*>(3));
  if (!step(3)) return {};
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  if (!step(4)) return {};
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  // ServerReflectionResponse.list_services_response (field 6) holds repeated
  // ServiceResponse (field 1) with name (field 1).
  const std::string bytes = Flatten(response);
  std::vector<std::string> names;
  size_t pos = 0;
  while (pos < bytes.size()) {
    const uint64_t key = ReadVarint(bytes, pos);
    if ((key & 7) != 2) return names;  // every field here is length-delimited
    const uint64_t len = ReadVarint(bytes, pos);
    if ((key >> 3) != 6) {
      pos += len;
      continue;
    }
    const size_t end = pos + len;
    while (pos < end) {
      ReadVarint(bytes, pos);  // ServiceResponse tag
      const size_t service_end = pos + ReadVarint(bytes, pos);
      while (pos < service_end) {
        const uint64_t k = ReadVarint(bytes, pos);
        const uint64_t l = ReadVarint(bytes, pos);
        if ((k >> 3) == 1) names.push_back(bytes.substr(pos, l));
        pos += l;
      }
    }
  }
  return names;
}

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int max_new_tokens) {
  v1::GenerateRequest req;
  for (int32_t id : prompt) req.mutable_token_ids()->add_ids(id);
  req.set_max_new_tokens(max_new_tokens);
  req.set_ignore_eos(true);
  return req;
}

Generated Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                   double timeout_seconds) {
  Generated out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_token_id()) out.tokens.push_back(resp.token_id());
    out.text += resp.text();
    out.responses.push_back(resp);
  }
  out.status = reader->Finish();
  return out;
}

}  // namespace llmint8::e2e
