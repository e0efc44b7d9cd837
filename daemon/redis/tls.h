#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/redis/redis_url.h"

typedef struct ssl_ctx_st SSL_CTX;  // NOLINT(modernize-use-using): OpenSSL's own spelling
typedef struct ssl_st SSL;          // NOLINT(modernize-use-using)

namespace distkit::redis {

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const;
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// A client context for rediss:// connections: TLS >= 1.2, the server verified against
// `tls.ca_file` (or the system CAs), the client certificate and key when given. Fails with a
// message naming the file that could not be used.
absl::StatusOr<SslCtxPtr> NewClientTlsContext(const TlsOptions& tls);

// A session for one connection to `host`: SNI (for names) and certificate name / IP checks
// against `tls.server_name` when set, else `host`.
absl::StatusOr<SSL*> NewTlsSession(SSL_CTX* ctx, const TlsOptions& tls, const std::string& host);

// The OpenSSL error queue as text (and emptied), for logs: "certificate verify failed" etc.
std::string TakeTlsErrors();

}  // namespace distkit::redis
