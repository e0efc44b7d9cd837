#include "daemon/transport/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/common/logging.h"
#include "daemon/transport/listen_tls.h"

namespace distkit::transport {
namespace {

// A health check request is a service name (< 256 bytes); probes open few connections.
constexpr int kMaxHealthMessageBytes = 4096;
constexpr size_t kHealthQuotaBytes = 4 << 20;

// A socket file left by a crashed daemon makes bind() fail; remove it, but only when nobody
// answers on it (never steal the socket of a running daemon).
absl::Status PrepareUnixPath(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--listen: ", path, " exists and is not a socket"));
  }
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool live = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  if (live) {
    return absl::FailedPreconditionError(
        absl::StrCat("--listen: another process is serving on ", path));
  }
  unlink(path.c_str());
  return absl::OkStatus();
}

// Drops the server reflection plugin from one builder: the health port answers grpc.health.v1
// and nothing else (the plugin is registered process-wide for the main server).
class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
                                    return plugin->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};

// Every method of the health port but grpc.health.v1's: UNIMPLEMENTED with a message that says
// why. (It is also what lets gRPC build a server whose only service is the default health one,
// which it adds after checking that something polls for calls.)
class HealthPortOnly : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    return new Refuse(absl::StrCat(context->method(),
                                   ": --health_listen serves grpc.health.v1 only; the distkit.v1 "
                                   "services are on the --listen addresses"));
  }

 private:
  class Refuse : public grpc::ServerGenericBidiReactor {
   public:
    explicit Refuse(const std::string& message) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, message));
    }
    void OnDone() override { delete this; }
  };
};

}  // namespace

// The --health_listen server: only the default grpc.health.v1 service (statuses mirrored from
// the main server by Server::SetHealth), plaintext because Kubernetes' grpc probes speak no TLS,
// and small limits because a probe sends a few bytes.
std::unique_ptr<grpc::Server> Server::StartHealthServer(const std::string& addr) {
  health_port_only_ = std::make_unique<HealthPortOnly>();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(addr, grpc::InsecureServerCredentials());
  builder.RegisterCallbackGenericService(health_port_only_.get());
  builder.SetOption(std::make_unique<WithoutReflection>());
  builder.SetMaxReceiveMessageSize(kMaxHealthMessageBytes);
  grpc::ResourceQuota quota("distkitd-health");
  quota.Resize(kHealthQuotaBytes);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 8);
  return builder.BuildAndStart();
}

const std::vector<std::string>& Server::ServiceNames() {
  static const auto* names =
      new std::vector<std::string>{"distkit.v1.CounterService", "distkit.v1.InstanceCounterService",
                                   "distkit.v1.RateLimitService"};
  return *names;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const config::Config& config, core::Counters* counters, const redis::RedisClient* redis,
    Metrics* metrics, core::InstanceCounters* icounters, RateLimiters rate_limiters,
    core::RlsLimiter* rls) {
  std::unique_ptr<Server> s(new Server());
  s->redis_ = redis;
  if (metrics == nullptr) {
    s->own_metrics_ = std::make_unique<Metrics>();
    metrics = s->own_metrics_.get();
  }
  s->counter_service_ = std::make_unique<CounterServiceImpl>(counters, config.default_namespace,
                                                             &s->in_flight_, metrics);
  s->health_names_ = {"distkit.v1.CounterService"};
  if (icounters != nullptr) {
    s->instance_counter_service_ = std::make_unique<InstanceCounterServiceImpl>(
        icounters, config.default_namespace, &s->in_flight_, metrics);
    s->health_names_.push_back("distkit.v1.InstanceCounterService");
  }
  if (rate_limiters.any()) {
    s->rate_limit_service_ = std::make_unique<RateLimitServiceImpl>(
        rate_limiters, config.default_namespace, &s->in_flight_, metrics);
    s->health_names_.push_back("distkit.v1.RateLimitService");
  }
  if (rls != nullptr) {
    s->rls_service_ =
        std::make_unique<RlsServiceImpl>(rls, &s->in_flight_, metrics, config.rls_response_headers);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> tcp_credentials = grpc::InsecureServerCredentials();
  if (config.listen_tls.enabled()) {
    if (auto st = CheckListenTls(config.listen_tls); !st.ok()) return st;
    tcp_credentials = ListenTlsCredentials(config.listen_tls);
  }
  grpc::ServerBuilder builder;
  for (const auto& addr : config.listen) {
    if (absl::StartsWith(addr, "unix:")) {
      std::string path = addr.substr(5);
      if (absl::StartsWith(path, "//")) path = path.substr(2);
      if (auto st = PrepareUnixPath(path); !st.ok()) return st;
      s->unix_paths_.push_back(path);
      builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
    } else {
      if (!config.listen_tls.enabled()) {
        spdlog::warn(
            "--listen {}: plaintext TCP (no --tls_cert): any process that can reach the "
            "port can call every RPC",
            addr);
      }
      builder.AddListeningPort(addr, tcp_credentials);
    }
  }
  builder.RegisterService(s->counter_service_.get());
  if (s->instance_counter_service_) builder.RegisterService(s->instance_counter_service_.get());
  if (s->rate_limit_service_) builder.RegisterService(s->rate_limit_service_.get());
  if (s->rls_service_) builder.RegisterService(s->rls_service_.get());
  builder.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  // --max_memory_mb: half for gRPC's own buffers and call state (its ResourceQuota; under
  // pressure gRPC shrinks its windows and cancels streams with RESOURCE_EXHAUSTED), half for the
  // requests and answers of admitted calls, which gRPC does not account (InFlight).
  const int64_t half = config.max_memory_mb << 19;
  grpc::ResourceQuota quota("distkitd");
  quota.Resize(static_cast<size_t>(half));
  builder.SetResourceQuota(quota);
  s->in_flight_.set_budget(half);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreams);
  // The Unix sockets are created with their final mode (no moment with the umask's): bind
  // under a umask that leaves exactly --socket_mode; the chmod below only confirms it.
  const mode_t old_umask = umask(~static_cast<mode_t>(config.socket_mode) & 0777);
  s->server_ = builder.BuildAndStart();
  umask(old_umask);
  if (!s->server_) {
    return absl::UnavailableError(absl::StrCat("--listen: could not listen on every address of ",
                                               absl::StrJoin(config.listen, ","),
                                               " (in use or not permitted?)"));
  }
  for (const auto& path : s->unix_paths_) {
    if (chmod(path.c_str(), config.socket_mode) != 0) {
      spdlog::warn("chmod {:o} {} failed: {}", config.socket_mode, path, std::strerror(errno));
    }
  }
  if (!config.health_listen.empty()) {
    s->health_server_ = s->StartHealthServer(config.health_listen);
    if (!s->health_server_) {
      return absl::UnavailableError(absl::StrCat("--health_listen: could not listen on ",
                                                 config.health_listen,
                                                 " (in use or not permitted?)"));
    }
  }
  const bool ready = redis->Healthy();
  s->SetHealth("", true);
  for (const auto& name : s->health_names_) s->SetHealth(name, ready);
  // `last` is the status already set.
  s->readiness_task_ = std::make_unique<PeriodicTask>(
      std::chrono::milliseconds(100), [raw = s.get(), last = ready]() mutable {
        const bool now = raw->redis_->Healthy();
        if (now == last) return;
        spdlog::info("readiness: Redis {}",
                     now ? "reachable, SERVING" : "unreachable, NOT_SERVING");
        for (const auto& name : raw->health_names_) raw->SetHealth(name, now);
        last = now;
      });
  s->readiness_task_->Start();
  return s;
}

void Server::SetHealth(const std::string& service, bool serving) {
  for (grpc::Server* server : {server_.get(), health_server_.get()}) {
    if (server != nullptr) server->GetHealthCheckService()->SetServingStatus(service, serving);
  }
}

void Server::Shutdown(std::chrono::system_clock::time_point deadline) {
  if (stopping_.exchange(true)) return;
  if (readiness_task_) readiness_task_->Stop();
  // The probes see NOT_SERVING until the process is gone; the health port closes last.
  if (health_server_) health_server_->GetHealthCheckService()->SetServingStatus(false);
  if (server_) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    // Let running calls finish (bounded), then close with a short deadline: gRPC's own wait
    // would last the whole deadline while any client merely keeps its connection open.
    const auto steady_deadline =
        std::chrono::steady_clock::now() + (deadline - std::chrono::system_clock::now());
    if (!in_flight_.WaitIdle(steady_deadline)) {
      spdlog::warn("shutdown: {} RPC(s) still running at the deadline; cancelling them",
                   in_flight_.count());
    }
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  }
  for (const auto& path : unix_paths_) unlink(path.c_str());
  if (health_server_) {
    health_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  }
}

Server::~Server() { Shutdown(std::chrono::system_clock::now()); }

}  // namespace distkit::transport
