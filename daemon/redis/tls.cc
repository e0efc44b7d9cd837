#include "daemon/redis/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "absl/strings/str_cat.h"
#include "daemon/common/strings.h"

namespace distkit::redis {

void SslCtxFree::operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }

std::string TakeTlsErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {  // NOLINT(google-runtime-int): OpenSSL's type
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

absl::StatusOr<SslCtxPtr> NewClientTlsContext(const TlsOptions& tls) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return absl::InternalError(absl::StrCat("TLS: ", TakeTlsErrors()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (tls.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS: cannot load the system CA store: ", TakeTlsErrors()));
    }
  } else if (SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--redis_tls_ca: cannot load CA file '", tls.ca_file, "': ", TakeTlsErrors()));
  }
  if (!tls.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--redis_tls_cert: cannot load '", tls.cert_file, "': ", TakeTlsErrors()));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("--redis_tls_key: cannot use '", tls.key_file,
                                                     "' with the certificate: ", TakeTlsErrors()));
    }
  }
  return ctx;
}

absl::StatusOr<SSL*> NewTlsSession(SSL_CTX* ctx, const TlsOptions& tls, const std::string& host) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return absl::InternalError(absl::StrCat("TLS: ", TakeTlsErrors()));
  const std::string& name = tls.server_name.empty() ? host : tls.server_name;
  in6_addr addr{};
  const bool is_ip =
      inet_pton(AF_INET, name.c_str(), &addr) == 1 || inet_pton(AF_INET6, name.c_str(), &addr) == 1;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  const int ok =
      is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) : SSL_set1_host(ssl, name.c_str());
  if (!is_ip) SSL_set_tlsext_host_name(ssl, name.c_str());
  if (ok != 1) {
    SSL_free(ssl);
    return absl::InvalidArgumentError(absl::StrCat("TLS: bad server name '", name, "'"));
  }
  return ssl;
}

}  // namespace distkit::redis
