#pragma once

#include <grpcpp/security/server_credentials.h>

#include <memory>

#include "absl/status/status.h"
#include "daemon/config/config.h"

namespace distkit::transport {

// Loads the --tls_* files once with OpenSSL: a certificate chain, a private key that matches
// it and (mutual TLS) a CA bundle with at least one certificate. InvalidArgument naming the flag
// and the file otherwise, so that a bad file stops the start (exit 2) instead of failing every
// handshake. An expired or not yet valid certificate is only logged: a rotation may fix it.
absl::Status CheckListenTls(const config::ListenTlsOptions& tls);

// Credentials for the TCP listeners: TLS (gRPC allows 1.2 and 1.3) with the certificate and key,
// re-read from their files every `tls.reload_seconds` (gRPC's file watcher: a rotated Secret is
// picked up without a restart; write the files atomically, as Kubernetes does). With a client CA,
// clients must present a certificate it signed (and that is valid now), else the handshake fails.
std::shared_ptr<grpc::ServerCredentials> ListenTlsCredentials(const config::ListenTlsOptions& tls);

}  // namespace distkit::transport
