#include "tests/support/tls_certs.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <vector>

#include "tests/support/process.h"

namespace distkit::testing {
namespace {

constexpr auto kOpensslTimeout = std::chrono::seconds(20);
constexpr char kDays[] = "2";

// Runs openssl with `args`; on failure adds a test failure with its output.
bool Openssl(const std::vector<std::string>& args) {
  auto [code, output] = Process::Run("openssl", args, kOpensslTimeout);
  if (code != 0) {
    std::string cmd = "openssl";
    for (const auto& a : args) cmd += " " + a;
    ADD_FAILURE() << cmd << " exited " << code << ":\n" << output;
    return false;
  }
  return true;
}

bool MakeKey(const std::string& path) {
  return Openssl({"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path});
}

bool MakeCa(const std::string& cert, const std::string& key, const std::string& cn) {
  return MakeKey(key) && Openssl({"req", "-x509", "-new", "-key", key, "-sha256", "-days", kDays,
                                  "-subj", "/CN=" + cn, "-out", cert});
}

// A certificate for `key` signed by the CA, with the extensions in `ext_file`.
// `days` "-1" makes an expired certificate (its end a day before its start, which is now).
bool MakeSigned(const std::string& cert, const std::string& key, const std::string& cn,
                const std::string& ca_cert, const std::string& ca_key, const std::string& ext_file,
                const std::string& days = kDays) {
  const std::string csr = cert + ".csr";
  return MakeKey(key) && Openssl({"req", "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr}) &&
         Openssl({"x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                  "-days", days, "-sha256", "-extfile", ext_file, "-out", cert});
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) ADD_FAILURE() << "cannot write " << path;
  return static_cast<bool>(out);
}

}  // namespace

std::optional<TlsCerts> TlsCerts::Generate(const std::string& dir) {
  TlsCerts c;
  c.dir = dir;
  c.ca_cert = dir + "/ca.crt";
  c.ca_key = dir + "/ca.key";
  c.server_cert = dir + "/server.crt";
  c.server_key = dir + "/server.key";
  c.client_cert = dir + "/client.crt";
  c.client_key = dir + "/client.key";
  c.other_ca_cert = dir + "/other-ca.crt";
  c.other_ca_key = dir + "/other-ca.key";
  c.other_client_cert = dir + "/other-client.crt";
  c.other_client_key = dir + "/other-client.key";
  c.other_server_cert = dir + "/other-server.crt";
  c.other_server_key = dir + "/other-server.key";
  c.expired_server_cert = dir + "/expired-server.crt";
  c.expired_server_key = dir + "/expired-server.key";
  c.expired_client_cert = dir + "/expired-client.crt";
  c.expired_client_key = dir + "/expired-client.key";
  const std::string server_ext = dir + "/server.ext";
  const std::string client_ext = dir + "/client.ext";
  // The server certificate is good for clients too: Redis nodes present it when they connect
  // to each other (TLS cluster bus, replication).
  bool ok = WriteFile(server_ext,
                      "basicConstraints=CA:FALSE\n"
                      "keyUsage=digitalSignature,keyEncipherment\n"
                      "extendedKeyUsage=serverAuth,clientAuth\n"
                      "subjectAltName=IP:127.0.0.1,DNS:localhost\n") &&
            WriteFile(client_ext,
                      "basicConstraints=CA:FALSE\n"
                      "keyUsage=digitalSignature,keyEncipherment\n"
                      "extendedKeyUsage=clientAuth\n") &&
            MakeCa(c.ca_cert, c.ca_key, "distkit test CA") &&
            MakeSigned(c.server_cert, c.server_key, "localhost", c.ca_cert, c.ca_key, server_ext) &&
            MakeSigned(c.client_cert, c.client_key, "distkit test client", c.ca_cert, c.ca_key,
                       client_ext) &&
            MakeCa(c.other_ca_cert, c.other_ca_key, "distkit other CA") &&
            MakeSigned(c.other_client_cert, c.other_client_key, "distkit other client",
                       c.other_ca_cert, c.other_ca_key, client_ext) &&
            MakeSigned(c.other_server_cert, c.other_server_key, "localhost", c.other_ca_cert,
                       c.other_ca_key, server_ext) &&
            MakeSigned(c.expired_server_cert, c.expired_server_key, "localhost", c.ca_cert,
                       c.ca_key, server_ext, "-1") &&
            MakeSigned(c.expired_client_cert, c.expired_client_key, "distkit expired client",
                       c.ca_cert, c.ca_key, client_ext, "-1");
  if (!ok) return std::nullopt;
  return c;
}

}  // namespace distkit::testing
