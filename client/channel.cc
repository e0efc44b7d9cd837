#include "distkit/channel.h"

#include <fstream>
#include <sstream>

namespace distkit {
namespace {

absl::StatusOr<std::string> ReadFile(std::string_view option, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::InvalidArgumentError(std::string(option) + ": cannot read '" + path +
                                      "' (or it is empty)");
  }
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewChannel(std::string_view addr,
                                                          const TlsOptions& tls) {
  const std::string target(addr);
  if (!tls.enabled()) return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (target.rfind("unix:", 0) == 0 || target.rfind("unix-abstract:", 0) == 0) {
    return absl::InvalidArgumentError(
        "TLS options given for a Unix socket: the daemon's Unix sockets are plaintext (TLS is "
        "for its TCP listeners)");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert and tls_key go together (a client certificate and its private key)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!tls.ca_file.empty()) {
    auto ca = ReadFile("tls_ca", tls.ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!tls.cert_file.empty()) {
    auto cert = ReadFile("tls_cert", tls.cert_file);
    if (!cert.ok()) return cert.status();
    auto key = ReadFile("tls_key", tls.key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  grpc::ChannelArguments args;
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

}  // namespace distkit
