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
struct TlsCerts {
  std::string dir;
  std::string ca_cert, ca_key;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  std::string other_ca_cert, other_ca_key;
  std::string other_client_cert, other_client_key;

  // Writes everything into `dir` (which must exist). Fails the current test (ADD_FAILURE, with
  // openssl's output) and returns nullopt when openssl fails.
  static std::optional<TlsCerts> Generate(const std::string& dir);
};

}  // namespace distkit::testing
