#pragma once

#include <optional>
#include <string>

namespace distkit::testing {

// Throw-away TLS material for tests, made with the `openssl` CLI (EC P-256, valid 2 days):
//   ca_*            the CA that signs the server and the client certificate
//   server_*        CN=localhost, subjectAltName IP:127.0.0.1 and DNS:localhost (also good as a
//                   client certificate: Redis nodes present it to each other)
//   client_*        a client certificate signed by the CA (mutual TLS)
//   other_ca_*      an unrelated CA ("wrong CA" tests: it verifies nothing of the above)
//   other_client_*  a client certificate signed by other_ca (refused by a server trusting ca)
//   other_server_*  like server_*, signed by other_ca (certificate rotation to another CA)
//   expired_server_*, expired_client_*  like server_* / client_*, signed by the CA, but their
//                   validity ended a day before it began (openssl x509 -days -1): expired
struct TlsCerts {
  std::string dir;
  std::string ca_cert, ca_key;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  std::string other_ca_cert, other_ca_key;
  std::string other_client_cert, other_client_key;
  std::string other_server_cert, other_server_key;
  std::string expired_server_cert, expired_server_key;
  std::string expired_client_cert, expired_client_key;

  // Writes everything into `dir` (which must exist). Fails the current test (ADD_FAILURE, with
  // openssl's output) and returns nullopt when openssl fails.
  static std::optional<TlsCerts> Generate(const std::string& dir);
};

}  // namespace distkit::testing
