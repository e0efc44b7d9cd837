// End to end (issue #13): TLS and mutual TLS on the daemon's TCP listeners, certificate
// rotation without a restart, bad certificate files refused at start (exit 2), the
// --health_listen port (grpc.health.v1 only, plaintext) and SIGHUP. Clients are the `distkit`
// CLI (its --tls_* flags, i.e. the client library's TLS) and raw gRPC channels; certificates are
// made with openssl (tests/support/tls_certs.h), including expired ones.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "distkit/client.h"
#include "distkit/v1/counter.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/process.h"
#include "tests/support/redis_process.h"
#include "tests/support/redis_server.h"
#include "tests/support/tls_certs.h"

namespace distkit {
namespace {

using namespace std::chrono_literals;
using testing::Daemon;
using testing::FreePort;
using testing::PollUntil;
using testing::Process;
using testing::RedisServer;
using testing::TlsCerts;

constexpr char kService[] = "distkit.v1.CounterService";

class ListenTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = RedisServer::Start();
    ASSERT_NE(redis_, nullptr);
    const std::string dir = redis_->dir() + "/listen-tls";
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
    auto certs = TlsCerts::Generate(dir);
    ASSERT_TRUE(certs.has_value());
    certs_ = *std::move(certs);
    port_ = FreePort();
    ASSERT_GT(port_, 0);
    tcp_ = absl::StrCat("127.0.0.1:", port_);
    socket_ = redis_->dir() + "/d.sock";
  }

  // distkitd on the test's Unix socket and 127.0.0.1:port_, with `extra` flags.
  std::vector<std::string> Args(std::vector<std::string> extra) const {
    std::vector<std::string> args = {"--listen",    absl::StrCat("unix:", socket_, ",", tcp_),
                                     "--redis",     redis_->url(),
                                     "--log_level", "info"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  std::unique_ptr<Daemon> Start(std::vector<std::string> extra) {
    auto d = std::make_unique<Daemon>(socket_, Args(std::move(extra)), std::vector<std::string>{});
    EXPECT_TRUE(d->WaitServing()) << d->Log();
    return d;
  }

  // The CLI against the TCP listener with `flags` before the command; {exit code, output}.
  std::pair<int, std::string> Cli(std::vector<std::string> flags,
                                  std::vector<std::string> command) const {
    std::vector<std::string> args = {"--addr", tcp_, "--timeout_ms", "5000"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), command.begin(), command.end());
    return Process::Run(DISTKIT_CLI_BIN, args, 15s);
  }
  std::pair<int, std::string> CliInc(std::vector<std::string> flags) const {
    return Cli(std::move(flags), {"counter", "inc", "k"});
  }

  // A start that must fail: {exit code, output}.
  std::pair<int, std::string> StartFails(std::vector<std::string> extra) const {
    return Process::Run(DISTKIT_DAEMON_BIN, Args(std::move(extra)), 20s);
  }

  std::unique_ptr<RedisServer> redis_;
  TlsCerts certs_;
  int port_ = 0;
  std::string tcp_, socket_;
};

TEST_F(ListenTlsTest, ServerTlsAnswersTlsClientsOnlyAndUnixStaysPlaintext) {
  auto d = Start({"--tls_cert", certs_.server_cert, "--tls_key", certs_.server_key});
  auto [code, out] = CliInc({"--tls_ca", certs_.ca_cert});
  EXPECT_EQ(code, testing::kCliExitOk) << out;
  EXPECT_NE(out.find("value=1"), std::string::npos) << out;

  // Plaintext on the TLS port: refused (the handshake fails, nothing is applied).
  std::tie(code, out) = CliInc({});
  EXPECT_EQ(code, testing::kCliExitCallFailed) << out;
  EXPECT_NE(out.find("UNAVAILABLE"), std::string::npos) << out;
  // A CA that did not sign the daemon's certificate.
  std::tie(code, out) = CliInc({"--tls_ca", certs_.other_ca_cert});
  EXPECT_EQ(code, testing::kCliExitCallFailed) << out;
  // The name checked: 127.0.0.1 is in the certificate, so is localhost; wrong.example is not.
  std::tie(code, out) = CliInc({"--tls_ca", certs_.ca_cert, "--tls_server_name", "localhost"});
  EXPECT_EQ(code, testing::kCliExitOk) << out;
  std::tie(code, out) = CliInc({"--tls_ca", certs_.ca_cert, "--tls_server_name", "wrong.example"});
  EXPECT_EQ(code, testing::kCliExitCallFailed) << out;

  // The Unix socket is plaintext, and sees the two increments made over TLS.
  v1::GetResponse get;
  ASSERT_TRUE(d->CounterGet("k", v1::CONSISTENCY_STRICT, &get).ok());
  EXPECT_EQ(get.value(), 2);
  // TLS options towards a Unix socket: a usage error of the CLI, not a silent plaintext call.
  std::tie(code, out) =
      Process::Run(DISTKIT_CLI_BIN,
                   {"--addr", d->addr(), "--tls_ca", certs_.ca_cert, "counter", "get", "k"}, 15s);
  EXPECT_EQ(code, testing::kCliExitUsage) << out;
  EXPECT_NE(out.find("Unix sockets are plaintext"), std::string::npos) << out;
}

TEST_F(ListenTlsTest, MutualTlsRefusesClientsWithoutAGoodCertificate) {
  auto d = Start({"--tls_cert", certs_.server_cert, "--tls_key", certs_.server_key,
                  "--tls_client_ca", certs_.ca_cert});
  auto [code, out] = CliInc({"--tls_ca", certs_.ca_cert, "--tls_cert", certs_.client_cert,
                             "--tls_key", certs_.client_key});
  EXPECT_EQ(code, testing::kCliExitOk) << out;

  const std::vector<std::pair<std::string, std::vector<std::string>>> refused = {
      {"no client certificate", {"--tls_ca", certs_.ca_cert}},
      {"a certificate of another CA",
       {"--tls_ca", certs_.ca_cert, "--tls_cert", certs_.other_client_cert, "--tls_key",
        certs_.other_client_key}},
      {"an expired certificate of the right CA",
       {"--tls_ca", certs_.ca_cert, "--tls_cert", certs_.expired_client_cert, "--tls_key",
        certs_.expired_client_key}},
      {"plaintext", {}},
  };
  for (const auto& [what, flags] : refused) {
    std::tie(code, out) = CliInc(flags);
    EXPECT_EQ(code, testing::kCliExitCallFailed) << what << ": " << out;
    EXPECT_NE(out.find("UNAVAILABLE"), std::string::npos) << what << ": " << out;
  }
  // Only the accepted client's increment was applied.
  v1::GetResponse get;
  ASSERT_TRUE(d->CounterGet("k", v1::CONSISTENCY_STRICT, &get).ok());
  EXPECT_EQ(get.value(), 1);
}

TEST_F(ListenTlsTest, ExpiredServerCertificateIsRefusedByClients) {
  auto d =
      Start({"--tls_cert", certs_.expired_server_cert, "--tls_key", certs_.expired_server_key});
  EXPECT_NE(d->Log().find("has expired"), std::string::npos) << d->Log();
  auto [code, out] = CliInc({"--tls_ca", certs_.ca_cert});
  EXPECT_EQ(code, testing::kCliExitCallFailed) << out;
  EXPECT_NE(out.find("UNAVAILABLE"), std::string::npos) << out;
}

// The certificate and key are replaced (atomically, as a Kubernetes Secret update does) by a pair
// of another CA: within --tls_reload_seconds the daemon presents the new one, without a restart.
TEST_F(ListenTlsTest, RotatedCertificateIsPickedUpWithoutRestart) {
  const std::string cert = redis_->dir() + "/listen-tls/live.crt";
  const std::string key = redis_->dir() + "/listen-tls/live.key";
  auto copy = [](const std::string& from, const std::string& to) {
    auto [code, out] = Process::Run("cp", {from, to + ".tmp"}, 10s);
    return code == 0 && std::rename((to + ".tmp").c_str(), to.c_str()) == 0;
  };
  ASSERT_TRUE(copy(certs_.server_cert, cert));
  ASSERT_TRUE(copy(certs_.server_key, key));
  auto d = Start({"--tls_cert", cert, "--tls_key", key, "--tls_reload_seconds", "1"});
  EXPECT_EQ(CliInc({"--tls_ca", certs_.ca_cert}).first, testing::kCliExitOk);
  EXPECT_EQ(CliInc({"--tls_ca", certs_.other_ca_cert}).first, testing::kCliExitCallFailed);

  ASSERT_TRUE(copy(certs_.other_server_key, key));
  ASSERT_TRUE(copy(certs_.other_server_cert, cert));
  EXPECT_TRUE(PollUntil(
      [&] {
        return CliInc({"--tls_ca", certs_.other_ca_cert}).first == testing::kCliExitOk;
      },
      20s))
      << d->Log();
  EXPECT_EQ(CliInc({"--tls_ca", certs_.ca_cert}).first, testing::kCliExitCallFailed);
  EXPECT_TRUE(d->process().Running());
}

TEST_F(ListenTlsTest, BadTlsConfigurationExitsTwoNamingTheFlag) {
  struct Case {
    std::vector<std::string> flags;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"--tls_cert", certs_.server_cert}, "--tls_cert: needs --tls_key"},
      {{"--tls_key", certs_.server_key}, "--tls_key: needs --tls_cert"},
      {{"--tls_client_ca", certs_.ca_cert}, "--tls_client_ca: mutual TLS needs server TLS"},
      {{"--tls_cert", certs_.server_cert, "--tls_key", certs_.client_key},
       "--tls_key: '" + certs_.client_key + "': is not the private key of the certificate"},
      {{"--tls_cert", certs_.server_key, "--tls_key", certs_.server_key},
       "--tls_cert: '" + certs_.server_key + "': no PEM certificate"},
      {{"--tls_cert", redis_->dir() + "/missing.crt", "--tls_key", certs_.server_key},
       "--tls_cert: cannot read"},
      {{"--tls_cert", certs_.server_cert, "--tls_key", certs_.server_key, "--tls_client_ca",
        certs_.server_key},
       "--tls_client_ca: '" + certs_.server_key + "': no PEM certificate"},
      {{"--tls_reload_seconds", "0"}, "--tls_reload_seconds"},
      {{"--health_listen", tcp_}, "--health_listen: '" + tcp_ + "' is also a --listen address"},
      {{"--health_listen", "nonsense"}, "--health_listen"},
  };
  for (const Case& c : cases) {
    auto [code, out] = StartFails(c.flags);
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find(c.expected), std::string::npos) << "expected: " << c.expected << "\n" << out;
  }
  // TLS with no TCP listener at all.
  auto [code, out] =
      Process::Run(DISTKIT_DAEMON_BIN,
                   {"--listen", "unix:" + socket_, "--redis", redis_->url(), "--tls_cert",
                    certs_.server_cert, "--tls_key", certs_.server_key},
                   20s);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("TLS only applies to TCP --listen addresses"), std::string::npos) << out;
}

// --health_listen: grpc.health.v1 (what a Kubernetes `grpc:` probe calls: Check, plaintext) and
// nothing else; its statuses follow the main server's, including readiness.
TEST_F(ListenTlsTest, HealthPortServesHealthOnlyInPlaintextAndFollowsReadiness) {
  const int health_port = FreePort();
  ASSERT_GT(health_port, 0);
  const std::string health_addr = absl::StrCat("127.0.0.1:", health_port);
  auto d = Start({"--tls_cert", certs_.server_cert, "--tls_key", certs_.server_key,
                  "--health_listen", health_addr, "--redis_timeout_ms", "200"});
  auto channel = testing::FastChannel(health_addr);
  auto health = grpc::health::v1::Health::NewStub(channel);
  EXPECT_EQ(testing::HealthStatus(*health, ""), 1);
  EXPECT_EQ(testing::HealthStatus(*health, kService), 1);
  EXPECT_EQ(testing::HealthStatus(*health, "distkit.v1.RateLimitService"), 1);

  // The counter service is not reachable on it...
  const absl::Status st = Client::FromChannel(channel, {})->Inc("k", 1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(st.message().find("--health_listen serves grpc.health.v1 only"), std::string::npos)
      << st;
  // ... nor server reflection (registered for the main server only).
  grpc::GenericStub generic(channel);
  grpc::ClientContext reflection_ctx;
  reflection_ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  grpc::ByteBuffer reflection_resp;
  grpc::Status reflection_st;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
  grpc::Slice no_bytes("");
  grpc::ByteBuffer empty(&no_bytes, 1);  // a valid (empty) message; a default ByteBuffer is not
  generic.UnaryCall(&reflection_ctx,
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                    grpc::StubOptions(), &empty, &reflection_resp, [&](grpc::Status s) {
                      std::lock_guard<std::mutex> lock(mu);
                      reflection_st = std::move(s);
                      done = true;
                      cv.notify_all();
                    });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return done; }));
  }
  EXPECT_EQ(reflection_st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(reflection_st.error_message().find("--health_listen"), std::string::npos);
  v1::GetResponse get;
  ASSERT_TRUE(d->CounterGet("k", v1::CONSISTENCY_STRICT, &get).ok());
  EXPECT_EQ(get.value(), 0);

  // The CLI probe works against it too (what an exec probe would run).
  auto [code, out] =
      Process::Run(DISTKIT_CLI_BIN, {"--addr", health_addr, "health", "--service", kService}, 15s);
  EXPECT_EQ(code, testing::kCliExitOk) << out;

  // Readiness follows Redis on the health port as on the main one; the process stays SERVING.
  redis_->Pause();
  EXPECT_TRUE(PollUntil([&] { return testing::HealthStatus(*health, kService) == 2; }, 15s));
  EXPECT_EQ(testing::HealthStatus(*health, ""), 1);
  redis_->Resume();
  EXPECT_TRUE(PollUntil([&] { return testing::HealthStatus(*health, kService) == 1; }, 15s));

  // SIGTERM: the health port answers NOT_SERVING or is gone, never SERVING, once it is handled.
  EXPECT_EQ(d->Stop(SIGTERM, 20s), 0) << d->Log();
  EXPECT_NE(testing::HealthStatus(*health, ""), 1);
}

TEST_F(ListenTlsTest, SighupKeepsTheDaemonServing) {
  auto d = Start({"--tls_cert", certs_.server_cert, "--tls_key", certs_.server_key});
  d->process().Signal(SIGHUP);
  EXPECT_TRUE(PollUntil([&] { return d->Log().find("SIGHUP") != std::string::npos; }, 10s))
      << d->Log();
  EXPECT_TRUE(d->process().Running());
  EXPECT_EQ(CliInc({"--tls_ca", certs_.ca_cert}).first, testing::kCliExitOk);
  EXPECT_EQ(d->Stop(SIGTERM, 20s), 0) << d->Log();
}

}  // namespace
}  // namespace distkit
