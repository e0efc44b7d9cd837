#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace distkit {

// TLS towards a daemon's TCP listener (its --tls_cert; --tls_client_ca asks for cert_file and
// key_file). TLS is on when any field is set; the daemon's Unix sockets are always plaintext.
struct TlsOptions {
  std::string ca_file;      // PEM CA bundle that verifies the daemon (empty = gRPC's default roots)
  std::string cert_file;    // PEM client certificate (mutual TLS), with key_file
  std::string key_file;     // PEM private key of cert_file
  std::string server_name;  // name checked against the daemon's certificate (empty = the host)

  bool enabled() const {
    return !ca_file.empty() || !cert_file.empty() || !key_file.empty() || !server_name.empty();
  }
};

// A channel to `addr` (`unix:PATH`, `HOST:PORT`, or any gRPC target URI): plaintext, or TLS
// with `tls`. InvalidArgument for a TLS option that cannot apply (a Unix socket, a certificate
// without its key) or a file that cannot be read, naming the option. The connection itself is
// made lazily, on the first call.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewChannel(std::string_view addr,
                                                          const TlsOptions& tls);

}  // namespace distkit
