// Shared by the tests that talk to an ro::HlrGateway over its socket (the gateway's own tests,
// `mcim serve ro` and `mcim up`): a bound client Unix datagram socket, as hostapd's eap_sim_db
// has one (an unbound sender gets no answer), and AKA-RESP-AUTH parsed as hostapd reads it.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aka/types.h"
#include "common/hex.h"

namespace mcim::ro::testing {

// Bound at `path` (removed again by the destructor); receive() waits up to one second.
class HlrClient {
 public:
  explicit HlrClient(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    const sockaddr_un a = address(path);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a), 0) << path;
    timeval tv{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~HlrClient() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  HlrClient(const HlrClient&) = delete;
  HlrClient& operator=(const HlrClient&) = delete;

  void send(const std::string& to, std::string_view m) {
    const sockaddr_un a = address(to);
    EXPECT_GE(::sendto(fd_, m.data(), m.size(), 0, reinterpret_cast<const sockaddr*>(&a), sizeof a),
              0)
        << to << ": " << std::strerror(errno);
  }
  std::optional<std::string> receive() {
    char buf[2000];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n < 0 ? std::nullopt : std::optional<std::string>(std::string(buf, std::size_t(n)));
  }
  // One request, its answer (nullopt after a second of silence).
  std::optional<std::string> ask(const std::string& to, std::string_view m) {
    send(to, m);
    return receive();
  }

 private:
  static sockaddr_un address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    return a;
  }

  std::string path_;
  int fd_ = -1;
};

// AKA-RESP-AUTH's fields as hostapd's eap_sim_db_aka_resp_auth() reads them.
struct AkaAnswer {
  std::string imsi;
  aka::Rand rand{};
  aka::Autn autn{};
  aka::Ik ik{};
  aka::Ck ck{};
  ByteVec res;
};

// "AKA-RESP-AUTH <IMSI> <RAND> <AUTN> <IK> <CK> <RES>"; nullopt for anything else (FAILURE too).
inline std::optional<AkaAnswer> parse_aka_answer(std::string_view line) {
  std::vector<std::string> f;
  std::string cur;
  for (char c : line) {
    if (c == ' ') {
      f.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  f.push_back(cur);
  if (f.size() != 7 || f[0] != "AKA-RESP-AUTH") return std::nullopt;
  AkaAnswer p;
  p.imsi = f[1];
  auto rand = parse_hex_fixed<16>(f[2], "rand");
  auto autn = parse_hex_fixed<16>(f[3], "autn");
  auto ik = parse_hex_fixed<16>(f[4], "ik");
  auto ck = parse_hex_fixed<16>(f[5], "ck");
  auto res = parse_hex(f[6], "res");
  if (!rand || !autn || !ik || !ck || !res) return std::nullopt;
  p.rand = *rand;
  p.autn = *autn;
  p.ik = *ik;
  p.ck = *ck;
  p.res = *res;
  return p;
}

}  // namespace mcim::ro::testing
