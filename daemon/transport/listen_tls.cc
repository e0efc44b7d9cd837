#include "daemon/transport/listen_tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "daemon/common/logging.h"
#include "daemon/redis/tls.h"

namespace distkit::transport {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

absl::Status Bad(const std::string& flag, const std::string& path, const std::string& problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": '", path, "': ", problem, " (", redis::TakeTlsErrors(), ")"));
}

// The first certificate of a PEM file.
absl::StatusOr<X509Ptr> ReadCertificate(const std::string& flag, const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return Bad(flag, path, "cannot open");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return Bad(flag, path, "no PEM certificate");
  return cert;
}

// Logs a certificate that is not valid now (the handshakes will fail until it is replaced).
void WarnIfNotValidNow(std::string_view flag, const std::string& path, X509* cert) {
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    spdlog::warn("--{}: the certificate in '{}' has expired: clients will refuse it", flag, path);
  } else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    spdlog::warn("--{}: the certificate in '{}' is not valid yet: clients will refuse it", flag,
                 path);
  }
}

}  // namespace

absl::Status CheckListenTls(const config::ListenTlsOptions& tls) {
  ERR_clear_error();
  auto cert = ReadCertificate("tls_cert", tls.cert_file);
  if (!cert.ok()) return cert.status();
  WarnIfNotValidNow("tls_cert", tls.cert_file, cert->get());

  BioPtr bio(BIO_new_file(tls.key_file.c_str(), "r"));
  if (!bio) return Bad("tls_key", tls.key_file, "cannot open");
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Bad("tls_key", tls.key_file, "no PEM private key (an encrypted key?)");
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    return Bad("tls_key", tls.key_file,
               absl::StrCat("is not the private key of the certificate in '", tls.cert_file, "'"));
  }

  if (!tls.client_ca_file.empty()) {
    auto ca = ReadCertificate("tls_client_ca", tls.client_ca_file);
    if (!ca.ok()) return ca.status();
    WarnIfNotValidNow("tls_client_ca", tls.client_ca_file, ca->get());
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> ListenTlsCredentials(const config::ListenTlsOptions& tls) {
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file,
      static_cast<unsigned int>(tls.reload_seconds));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace distkit::transport
