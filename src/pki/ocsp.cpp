#include "pki/ocsp.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>

#include "common/file.h"
#include "pki/authority.h"
#include "pki/certificate_cache.h"

namespace mcim::pki {
namespace {

using OcspRequestPtr = Owned<OCSP_REQUEST, OCSP_REQUEST_free>;
using OcspResponsePtr = Owned<OCSP_RESPONSE, OCSP_RESPONSE_free>;
using OcspBasicPtr = Owned<OCSP_BASICRESP, OCSP_BASICRESP_free>;
using OcspCertIdPtr = Owned<OCSP_CERTID, OCSP_CERTID_free>;
using Asn1TimePtr = Owned<ASN1_TIME, ASN1_TIME_free>;
using Asn1OctetsPtr = Owned<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;
using BignumPtr = Owned<BIGNUM, BN_free>;
using EncodeCtxPtr = Owned<EVP_ENCODE_CTX, EVP_ENCODE_CTX_free>;

void free_openssl_string(char* p) { OPENSSL_free(p); }
using OpensslString = Owned<char, free_openssl_string>;

// ---------------------------------------------------------------------------------------------
// Shared helpers

std::unexpected<Error> invalid(std::string_view check) {
  ERR_clear_error();  // whatever OpenSSL queued is summarised by `check`
  return fail(ErrorCode::ocsp_invalid, fmt::format("OCSP response: {}", check));
}

std::optional<TimePoint> to_time_point(const ASN1_GENERALIZEDTIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

Asn1TimePtr to_asn1_time(TimePoint t) {
  return Asn1TimePtr(ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(t)));
}

// The nonce octets of a Nonce extension. RFC 8954 wraps them in an OCTET STRING inside
// extnValue (as OpenSSL does); some older clients put them bare, which we take as they are.
ByteVec nonce_octets(X509_EXTENSION* ext) {
  const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
  const unsigned char* begin = ASN1_STRING_get0_data(value);
  const long length = ASN1_STRING_length(value);
  const unsigned char* p = begin;
  Asn1OctetsPtr inner(d2i_ASN1_OCTET_STRING(nullptr, &p, length));
  if (inner && p == begin + length) {
    const unsigned char* d = ASN1_STRING_get0_data(inner.get());
    return ByteVec(d, d + ASN1_STRING_length(inner.get()));
  }
  ERR_clear_error();
  return ByteVec(begin, begin + length);
}

// ---------------------------------------------------------------------------------------------
// Client: response verification, one check per function

// A definite-length DER element: its tag, its contents, and the whole encoding.
struct DerElement {
  std::uint8_t tag = 0;
  ByteView value, whole;
};

// Reads one element off the front of `in` (bounds-checked; indefinite lengths refused).
std::optional<DerElement> read_der(ByteView& in) {
  if (in.size() < 2) return std::nullopt;
  std::size_t length = in[1], header = 2;
  if (length & 0x80) {
    const std::size_t octets = length & 0x7f;
    if (octets == 0 || octets > 4 || in.size() < 2 + octets) return std::nullopt;
    length = 0;
    for (std::size_t i = 0; i < octets; ++i) length = (length << 8) | in[2 + i];
    header += octets;
  }
  if (in.size() - header < length) return std::nullopt;
  DerElement e{in[0], in.subspan(header, length), in.first(header + length)};
  in = in.subspan(header + length);
  return e;
}

// A DER tag and minimal length octets (n < 2^32, which read_der guarantees here).
ByteVec der_header(std::uint8_t tag, std::size_t n) {
  if (n < 0x80) return {tag, static_cast<std::uint8_t>(n)};
  ByteVec out{tag, 0x80};
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (out.size() > 2 || (n >> shift) != 0) {
      out.push_back(static_cast<std::uint8_t>(n >> shift));
      ++out[1];
    }
  }
  return out;
}

std::optional<DerElement> read_der(ByteView& in, std::uint8_t tag) {
  auto e = read_der(in);
  return e && e->tag == tag ? e : std::nullopt;
}

// The two layers around a BasicOCSPResponse, read by hand rather than by OpenSSL: its
// certificates come back as raw DER so that they are parsed only when needed and then only once
// (certificate_memo), which is most of the cost of a verification otherwise.
struct SplitResponse {
  ByteVec basic;                // the BasicOCSPResponse re-assembled without its certs field
  std::vector<ByteView> certs;  // each certificate it carried, as DER (views into the input)
};

constexpr std::array<std::uint8_t, 9> kIdPkixOcspBasic = {0x2b, 0x06, 0x01, 0x05, 0x05,
                                                          0x07, 0x30, 0x01, 0x01};

// OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT SEQUENCE {
//   responseType OBJECT IDENTIFIER, response OCTET STRING } OPTIONAL }
Result<ByteView> basic_bytes(ByteView der) {
  if (der.empty()) return invalid("empty");
  ByteView in = der;
  auto outer = read_der(in, 0x30);
  if (!outer || !in.empty()) return invalid("not a DER OCSPResponse");
  ByteView body = outer->value;
  auto status = read_der(body, 0x0a);
  if (!status || status->value.size() != 1) return invalid("not a DER OCSPResponse");
  if (status->value[0] != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
    return invalid(fmt::format("responder status {}", OCSP_response_status_str(status->value[0])));
  }
  auto wrapper = read_der(body, 0xa0);
  ByteView bytes = wrapper ? wrapper->value : ByteView();
  auto seq = read_der(bytes, 0x30);
  ByteView fields = seq ? seq->value : ByteView();
  auto type = read_der(fields, 0x06);
  auto octets = read_der(fields, 0x04);
  if (!wrapper || !body.empty() || !seq || !type || !octets) {
    return invalid("not a DER OCSPResponse");
  }
  if (!std::ranges::equal(type->value, kIdPkixOcspBasic)) return invalid("not a basic response");
  return octets->value;
}

// BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature BIT STRING,
//   certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
Result<SplitResponse> split_response(ByteView der) {
  auto bytes = basic_bytes(der);
  if (!bytes) return std::unexpected(bytes.error());
  ByteView in = *bytes;
  auto basic = read_der(in, 0x30);
  ByteView fields = basic ? basic->value : ByteView();
  auto tbs = read_der(fields, 0x30);
  auto alg = read_der(fields, 0x30);
  auto sig = read_der(fields, 0x03);
  if (!basic || !in.empty() || !tbs || !alg || !sig) return invalid("not a BasicOCSPResponse");
  SplitResponse out;
  if (!fields.empty()) {
    auto wrapper = read_der(fields, 0xa0);
    ByteView list = wrapper ? wrapper->value : ByteView();
    auto certs = read_der(list, 0x30);
    if (!wrapper || !fields.empty() || !certs || !list.empty()) {
      return invalid("not a BasicOCSPResponse");
    }
    for (ByteView c = certs->value; !c.empty();) {
      auto cert = read_der(c, 0x30);
      if (!cert) return invalid("unreadable certificate in the response");
      out.certs.push_back(cert->whole);
    }
  }
  out.basic = der_header(0x30, tbs->whole.size() + alg->whole.size() + sig->whole.size());
  for (ByteView part : {tbs->whole, alg->whole, sig->whole}) {
    out.basic.insert(out.basic.end(), part.begin(), part.end());
  }
  return out;
}

Result<OcspBasicPtr> parse_basic(const ByteVec& der) {
  const unsigned char* p = der.data();
  OcspBasicPtr basic(d2i_OCSP_BASICRESP(nullptr, &p, static_cast<long>(der.size())));
  if (!basic || p != der.data() + der.size()) return invalid("not a BasicOCSPResponse");
  return basic;
}

// A certificate parsed from the exact DER it was given (the whole of it consumed). A delegated
// responder signs every answer with the same certificate, so the parse (OpenSSL 3 spends ~130 us
// decoding its public key) is cached: a CertificateCache of its own, so that only bytes that
// passed this parse are ever found in it. Never destroyed: no X509_free may run after OpenSSL's
// own atexit cleanup.
X509Ptr parse_responder_certificate(ByteView der) {
  static auto* cache = new CertificateCache();
  auto cert = cache->parse(der, [](ByteView in) -> Result<X509Ptr> {
    const unsigned char* p = in.data();
    X509Ptr c(d2i_X509(nullptr, &p, static_cast<long>(in.size())));
    if (!c || p != in.data() + in.size()) {
      ERR_clear_error();
      return fail(ErrorCode::bad_format, "not a DER certificate");
    }
    return c;
  });
  return cert ? std::move(*cert) : nullptr;
}

// A process-wide memo of a pure and costly result, keyed by the SHA-256 fingerprints of both
// certificates: "this certificate's signature verifies under that issuer's key". A delegated
// responder signs every answer with the same certificate, so after the first answer it is a
// hit. Bounded: cleared when full. Thread-safe.
class CertificateMemo {
 public:
  static CertificateMemo& instance() {
    // Never destroyed: no X509_free may run after OpenSSL's own atexit cleanup.
    static auto* memo = new CertificateMemo();
    return *memo;
  }

  bool signed_by(X509* cert, X509* issuer) {
    const auto key = std::pair{fingerprint(cert), fingerprint(issuer)};
    {
      std::lock_guard lock(mu_);
      if (verified_.contains(key)) return true;
    }
    if (X509_verify(cert, X509_get0_pubkey(issuer)) != 1) {
      ERR_clear_error();
      return false;
    }
    std::lock_guard lock(mu_);
    if (verified_.size() >= kCapacity) verified_.clear();
    verified_.insert(key);
    return true;
  }

 private:
  static constexpr std::size_t kCapacity = 256;

  static Bytes<32> fingerprint(X509* cert) {
    Bytes<32> md{};
    unsigned int len = 0;
    X509_digest(cert, EVP_sha256(), md.data(), &len);
    return md;
  }

  std::mutex mu_;  // guards verified_
  std::set<std::pair<Bytes<32>, Bytes<32>>> verified_;
};

// Whether the ResponderID (byKey: SHA-1 of the public key bits, or byName) designates cert.
bool names_responder(const OCSP_BASICRESP* basic, X509* cert) {
  const ASN1_OCTET_STRING* key_hash = nullptr;
  const X509_NAME* name = nullptr;
  if (OCSP_resp_get0_id(basic, &key_hash, &name) != 1) return false;
  if (key_hash != nullptr) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    if (X509_pubkey_digest(cert, EVP_sha1(), md.data(), &len) != 1) return false;
    return static_cast<unsigned int>(ASN1_STRING_length(key_hash)) == len &&
           std::memcmp(ASN1_STRING_get0_data(key_hash), md.data(), len) == 0;
  }
  return name != nullptr && X509_NAME_cmp(name, X509_get_subject_name(cert)) == 0;
}

// The issuer itself when the ResponderID names it, else the certificate carried in the response
// that the ResponderID names (a delegated responder, still to be checked).
Result<X509Ptr> find_signer(const OCSP_BASICRESP* basic, X509* issuer,
                            const std::vector<ByteView>& certs) {
  if (names_responder(basic, issuer)) return up_ref(issuer);
  for (ByteView der : certs) {
    X509Ptr cert = parse_responder_certificate(der);
    if (cert && names_responder(basic, cert.get())) return cert;
  }
  return invalid("the responder ID names neither the issuer nor a certificate in the response");
}

// RFC 6960 §4.2.2.2: a delegated responder's certificate is issued directly by the CA that
// issued the certificate in question and carries id-kp-OCSPSigning.
Result<void> check_delegation(X509* signer, X509* issuer, TimePoint now) {
  if (X509_check_issued(issuer, signer) != X509_V_OK ||
      !CertificateMemo::instance().signed_by(signer, issuer)) {
    return invalid("the responder certificate was not issued by the certificate's issuer");
  }
  const bool has_eku = (X509_get_extension_flags(signer) & EXFLAG_XKUSAGE) != 0;
  if (!has_eku || (X509_get_extended_key_usage(signer) & XKU_OCSP_SIGN) == 0) {
    return invalid("the responder certificate lacks the OCSPSigning extended key usage");
  }
  if (now + kOcspClockSkew < not_before(signer) || now > not_after(signer)) {
    return invalid("the responder certificate is expired or not yet valid");
  }
  return {};
}

Result<void> check_signature(OCSP_BASICRESP* basic, X509* signer) {
  // OCSP_basic_verify with the signer as the only candidate and NOVERIFY is exactly one
  // signature verification: the chain is what check_delegation established.
  STACK_OF(X509)* candidates = sk_X509_new_null();
  if (candidates == nullptr || sk_X509_push(candidates, signer) <= 0) {
    sk_X509_free(candidates);
    return std::unexpected(openssl_error(ErrorCode::internal, "OCSP verification"));
  }
  const int ok = OCSP_basic_verify(basic, candidates, nullptr, OCSP_NOINTERN | OCSP_NOVERIFY);
  sk_X509_free(candidates);
  if (ok <= 0) return invalid("the signature does not verify");
  return {};
}

Result<void> check_nonce(OCSP_BASICRESP* basic, const ByteVec* expected) {
  if (expected == nullptr) return {};
  const int at = OCSP_BASICRESP_get_ext_by_NID(basic, NID_id_pkix_OCSP_Nonce, -1);
  if (at < 0) return fail(ErrorCode::nonce_mismatch, "OCSP response: no nonce, one was sent");
  if (nonce_octets(OCSP_BASICRESP_get_ext(basic, at)) != *expected) {
    return fail(ErrorCode::nonce_mismatch, "OCSP response: the nonce is not the request's");
  }
  return {};
}

// The SingleResponse whose CertID is cert's, computed with the hash the response used.
Result<OCSP_SINGLERESP*> find_single(OCSP_BASICRESP* basic, X509* cert, X509* issuer) {
  OcspCertIdPtr ours;
  const ASN1_OBJECT* ours_hash = nullptr;
  for (int i = 0; i < OCSP_resp_count(basic); ++i) {
    OCSP_SINGLERESP* single = OCSP_resp_get0(basic, i);
    auto* id = const_cast<OCSP_CERTID*>(OCSP_SINGLERESP_get0_id(single));
    ASN1_OBJECT* hash = nullptr;
    OCSP_id_get0_info(nullptr, &hash, nullptr, nullptr, id);
    if (!ours || OBJ_cmp(hash, ours_hash) != 0) {
      const EVP_MD* md = EVP_get_digestbyobj(hash);
      if (md == nullptr) continue;
      ours.reset(OCSP_cert_to_id(md, cert, issuer));
      ours_hash = hash;
      if (!ours) continue;
    }
    if (OCSP_id_cmp(ours.get(), id) == 0) return single;
  }
  return invalid("no single response about this certificate");
}

Result<void> check_times(const RevocationAnswer& a, TimePoint now, std::chrono::seconds max_age) {
  if (a.this_update > now + kOcspClockSkew) return invalid("thisUpdate is in the future");
  if (now - a.this_update > max_age) {
    return invalid(fmt::format("thisUpdate is older than max_age ({} s)", max_age.count()));
  }
  if (a.next_update && *a.next_update < a.this_update) {
    return invalid("nextUpdate precedes thisUpdate");
  }
  if (a.next_update && *a.next_update + kOcspClockSkew < now) {
    return invalid("nextUpdate has passed");
  }
  return {};
}

Result<RevocationAnswer> answer_of(OCSP_SINGLERESP* single, TimePoint now,
                                   std::chrono::seconds max_age) {
  int reason = 0;
  ASN1_GENERALIZEDTIME *revoked_at = nullptr, *this_update = nullptr, *next_update = nullptr;
  const int status =
      OCSP_single_get0_status(single, &reason, &revoked_at, &this_update, &next_update);
  RevocationAnswer a;
  const auto t = to_time_point(this_update);
  if (!t) return invalid("thisUpdate unreadable");
  a.this_update = *t;
  if (next_update != nullptr) {
    a.next_update = to_time_point(next_update);
    if (!a.next_update) return invalid("nextUpdate unreadable");
  }
  if (auto r = check_times(a, now, max_age); !r) return std::unexpected(r.error());
  switch (status) {
    case V_OCSP_CERTSTATUS_GOOD: a.status = CertStatus::good; break;
    case V_OCSP_CERTSTATUS_UNKNOWN: a.status = CertStatus::unknown; break;
    case V_OCSP_CERTSTATUS_REVOKED:
      a.status = CertStatus::revoked;
      a.revoked_at = to_time_point(revoked_at);
      if (!a.revoked_at) return invalid("revocationTime unreadable");
      break;
    default: return invalid("unreadable certificate status");
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Client: transport

Result<std::string> aia_ocsp_url(X509* cert) {
  STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(cert);
  std::string url = sk_OPENSSL_STRING_num(urls) > 0 ? sk_OPENSSL_STRING_value(urls, 0) : "";
  X509_email_free(urls);
  if (url.empty()) {
    return fail(ErrorCode::ocsp_invalid, "the certificate names no OCSP responder (AIA)");
  }
  return url;
}

bool is_loopback(std::string_view host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1" || host == "[::1]";
}

Result<ByteVec> read_all(BIO* bio) {
  ByteVec out;
  std::array<unsigned char, 4096> buf{};
  for (;;) {
    const int n = BIO_read(bio, buf.data(), static_cast<int>(buf.size()));
    if (n <= 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
    if (out.size() > kOcspMaxResponseBytes) return invalid("answer too large");
  }
  return out;
}

Result<ByteVec> http_post(const std::string& url, ByteView request, bool url_from_aia) {
  char *host_raw = nullptr, *port_raw = nullptr, *path_raw = nullptr;
  int use_tls = 0;
  const int parsed = OSSL_HTTP_parse_url(url.c_str(), &use_tls, nullptr, &host_raw, &port_raw,
                                         nullptr, &path_raw, nullptr, nullptr);
  OpensslString host(host_raw), port(port_raw), path(path_raw);
  if (parsed != 1) {
    ERR_clear_error();
    return fail(url_from_aia ? ErrorCode::ocsp_invalid : ErrorCode::invalid_argument,
                fmt::format("OCSP URL {}: not an http URL", url));
  }
  if (use_tls != 0) {
    return fail(ErrorCode::unsupported, fmt::format("OCSP URL {}: https is not supported", url));
  }
  BioPtr body = memory_bio(request);
  // A proxy never makes sense for the local machine; elsewhere honour http_proxy/no_proxy.
  const char* proxy = is_loopback(host.get()) ? "" : nullptr;
  const int timeout = static_cast<int>(kOcspHttpTimeout.count());
  BioPtr answer(OSSL_HTTP_transfer(
      nullptr, host.get(), port.get(), path.get(), 0, proxy, nullptr, nullptr, nullptr, nullptr,
      nullptr, 0, nullptr, "application/ocsp-request", body.get(), "application/ocsp-response", 1,
      kOcspMaxResponseBytes, timeout, 0));
  if (!answer) {
    return std::unexpected(
        openssl_error(ErrorCode::ocsp_invalid, fmt::format("no OCSP answer from {}", url)));
  }
  return read_all(answer.get());
}

// ---------------------------------------------------------------------------------------------
// Responder helpers

// OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] OPTIONAL }: the
// error statuses carry no body, so their encoding is constant and cannot fail.
ByteVec status_only(int status) {
  return {0x30, 0x03, 0x0a, 0x01, static_cast<std::uint8_t>(status)};
}

OcspRequestPtr parse_request(ByteView der) {
  if (der.empty()) return nullptr;
  const unsigned char* p = der.data();
  OcspRequestPtr req(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size())));
  if (!req || p != der.data() + der.size() || OCSP_request_onereq_count(req.get()) < 1) {
    ERR_clear_error();
    return nullptr;
  }
  return req;
}

// RFC 8954 §2.1: a responder rejects nonces shorter than 1 or longer than 32 octets.
bool nonce_acceptable(OCSP_REQUEST* req) {
  const int at = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1);
  if (at < 0) return true;
  const std::size_t n = nonce_octets(OCSP_REQUEST_get_ext(req, at)).size();
  return n >= 1 && n <= 32;
}

// The index's spelling of a serial (BN_bn2hex, uppercase), as `openssl ocsp -index` looks it up.
std::string index_serial_of(const ASN1_INTEGER* serial) {
  BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  OpensslString hex(bn ? BN_bn2hex(bn.get()) : nullptr);
  return hex ? std::string(hex.get()) : std::string();
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      return std::nullopt;
    }
    out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

std::optional<ByteVec> base64_decode(std::string_view text) {
  if (text.empty() || text.size() > 4 * kOcspMaxResponseBytes) return std::nullopt;
  EncodeCtxPtr ctx(EVP_ENCODE_CTX_new());
  if (!ctx) return std::nullopt;
  ByteVec out(text.size() / 4 * 3 + 3);
  int n = 0, tail = 0;
  EVP_DecodeInit(ctx.get());
  if (EVP_DecodeUpdate(ctx.get(), out.data(), &n,
                       reinterpret_cast<const unsigned char*>(text.data()),
                       static_cast<int>(text.size())) < 0 ||
      EVP_DecodeFinal(ctx.get(), out.data() + n, &tail) != 1) {
    return std::nullopt;
  }
  out.resize(static_cast<std::size_t>(n + tail));
  return out;
}

// RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}. The
// responder URL may have a path of its own and clients do not always escape the '/' of
// base64, so the request is the longest tail after a '/' that decodes to an OCSPRequest.
OcspRequestPtr request_from_get_target(std::string_view target) {
  const auto path = percent_decode(target.substr(0, target.find('?')));
  if (!path) return nullptr;
  for (auto slash = path->find('/'); slash != std::string::npos;
       slash = path->find('/', slash + 1)) {
    if (auto der = base64_decode(std::string_view(*path).substr(slash + 1))) {
      if (auto req = parse_request(*der)) return req;
    }
  }
  ERR_clear_error();
  return nullptr;
}

OcspHttpReply ocsp_http_reply(ByteVec der) {
  OcspHttpReply r;
  r.content_type = "application/ocsp-response";
  r.body = std::move(der);
  return r;
}

struct FileStamp {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

std::optional<FileStamp> stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileStamp{st.st_dev, st.st_ino, st.st_size,
                   std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
}

using IndexMap = std::unordered_map<std::string, IndexEntry>;

Result<std::shared_ptr<const IndexMap>> load_index(const std::string& path) {
  auto text = read_text_file(path);
  if (!text) return std::unexpected(text.error());
  auto entries = parse_index(*text);
  if (!entries) return std::unexpected(entries.error());
  auto map = std::make_shared<IndexMap>();
  for (auto& e : *entries) {
    std::string serial = e.serial;
    (*map)[std::move(serial)] = std::move(e);  // a later line for the same serial wins
  }
  return map;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Client API

Result<ByteVec> make_ocsp_request(X509* cert, X509* issuer, RandomSource& random, ByteVec* nonce) {
  if (cert == nullptr || issuer == nullptr) {
    return fail(ErrorCode::invalid_argument, "OCSP request: a certificate and its issuer");
  }
  OcspRequestPtr req(OCSP_REQUEST_new());
  OCSP_CERTID* id = OCSP_cert_to_id(EVP_sha1(), cert, issuer);
  if (!req || id == nullptr || OCSP_request_add0_id(req.get(), id) == nullptr) {
    OCSP_CERTID_free(id);
    return std::unexpected(openssl_error(ErrorCode::internal, "building an OCSP request"));
  }
  const Bytes<16> fresh = random.draw<16>();
  if (OCSP_request_add1_nonce(req.get(), const_cast<unsigned char*>(fresh.data()),
                              static_cast<int>(fresh.size())) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "OCSP request nonce"));
  }
  if (nonce != nullptr) nonce->assign(fresh.begin(), fresh.end());
  ByteVec der = der_of<OCSP_REQUEST>(req.get(), i2d_OCSP_REQUEST);
  if (der.empty()) return std::unexpected(openssl_error(ErrorCode::internal, "OCSP request DER"));
  return der;
}

Result<RevocationAnswer> verify_ocsp_response(ByteView response_der, X509* cert, X509* issuer,
                                              const ByteVec* expected_nonce, const Clock& clock,
                                              std::chrono::seconds max_age) {
  if (cert == nullptr || issuer == nullptr) {
    return fail(ErrorCode::invalid_argument, "OCSP verification: a certificate and its issuer");
  }
  const TimePoint now = clock.now();
  auto split = split_response(response_der);
  if (!split) return std::unexpected(split.error());
  auto basic = parse_basic(split->basic);
  if (!basic) return std::unexpected(basic.error());
  OCSP_BASICRESP* bs = basic->get();
  auto signer = find_signer(bs, issuer, split->certs);
  if (!signer) return std::unexpected(signer.error());
  if (signer->get() != issuer) {
    if (auto r = check_delegation(signer->get(), issuer, now); !r) {
      return std::unexpected(r.error());
    }
  }
  if (auto r = check_signature(bs, signer->get()); !r) return std::unexpected(r.error());
  if (auto r = check_nonce(bs, expected_nonce); !r) return std::unexpected(r.error());
  auto single = find_single(bs, cert, issuer);
  if (!single) return std::unexpected(single.error());
  return answer_of(*single, now, max_age);
}

Result<RevocationAnswer> query_ocsp(X509* cert, X509* issuer, const std::string& url,
                                    const Clock& clock, RandomSource& random,
                                    std::chrono::seconds max_age) {
  if (cert == nullptr || issuer == nullptr) {
    return fail(ErrorCode::invalid_argument, "OCSP query: a certificate and its issuer");
  }
  auto target = url.empty() ? aia_ocsp_url(cert) : Result<std::string>(url);
  if (!target) return std::unexpected(target.error());
  ByteVec nonce;
  auto request = make_ocsp_request(cert, issuer, random, &nonce);
  if (!request) return std::unexpected(request.error());
  auto answer = http_post(*target, *request, url.empty());
  if (!answer) return std::unexpected(answer.error());
  return verify_ocsp_response(*answer, cert, issuer, &nonce, clock, max_age);
}

// ---------------------------------------------------------------------------------------------
// Responder

struct OcspResponder::Impl {
  X509Ptr ca;
  X509Ptr signer;
  PkeyPtr key;
  std::string index_path;
  const Clock* clock = nullptr;
  OcspResponderOptions options;
  // The CA's CertID (without serial) under each hash a client may use: a request's CertID is
  // ours when OCSP_id_issuer_cmp matches one of them; computed once, not per request.
  std::vector<OcspCertIdPtr> issuer_ids;

  std::mutex mu;  // guards stamp, index, loads
  std::optional<FileStamp> stamp;
  std::shared_ptr<const IndexMap> index;
  std::uint64_t loads = 0;

  Result<void> compute_issuer_ids();
  Result<std::shared_ptr<const IndexMap>> current_index();
  bool issued_by_us(OCSP_CERTID* id) const;
  std::optional<int> add_statuses(OCSP_BASICRESP* bs, OCSP_REQUEST* req, const IndexMap& index,
                                  TimePoint now) const;
  ByteVec answer(OCSP_REQUEST* req);
  ByteVec sign(OCSP_BASICRESP* bs, TimePoint now) const;
};

Result<void> OcspResponder::Impl::compute_issuer_ids() {
  for (int nid : {NID_sha1, NID_sha224, NID_sha256, NID_sha384, NID_sha512}) {
    OcspCertIdPtr id(OCSP_cert_id_new(EVP_get_digestbynid(nid), X509_get_subject_name(ca.get()),
                                      X509_get0_pubkey_bitstr(ca.get()), nullptr));
    if (!id) return std::unexpected(openssl_error(ErrorCode::internal, "OCSP issuer hashes"));
    issuer_ids.push_back(std::move(id));
  }
  return {};
}

// The parsed index, re-read only when index.txt changed (a stat per request, no read): `mcim
// pki revoke` replaces the file by rename, so its inode changes even within one mtime tick.
Result<std::shared_ptr<const IndexMap>> OcspResponder::Impl::current_index() {
  const auto now_stamp = stamp_of(index_path);
  if (!now_stamp) {
    return fail(errno == ENOENT ? ErrorCode::not_found : ErrorCode::io_error,
                fmt::format("cannot stat {}: {}", index_path, std::strerror(errno)));
  }
  std::lock_guard lock(mu);
  if (index && stamp == now_stamp) return index;
  auto loaded = load_index(index_path);
  if (!loaded) return std::unexpected(loaded.error());  // no stale answers from an old index
  index = std::move(*loaded);
  stamp = now_stamp;
  ++loads;
  return index;
}

bool OcspResponder::Impl::issued_by_us(OCSP_CERTID* id) const {
  for (const auto& ours : issuer_ids) {
    if (OCSP_id_issuer_cmp(ours.get(), id) == 0) return true;
  }
  return false;
}

// Adds one SingleResponse per request entry; returns how many named this CA (nullopt on an
// OpenSSL failure).
std::optional<int> OcspResponder::Impl::add_statuses(OCSP_BASICRESP* bs, OCSP_REQUEST* req,
                                                     const IndexMap& idx, TimePoint now) const {
  const Asn1TimePtr this_update = to_asn1_time(now);
  const Asn1TimePtr next_update = to_asn1_time(now + options.validity);
  if (!this_update || !next_update) return std::nullopt;
  int ours = 0;
  for (int i = 0; i < OCSP_request_onereq_count(req); ++i) {
    OCSP_CERTID* id = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, i));
    const IndexEntry* entry = nullptr;
    if (issued_by_us(id)) {
      ++ours;
      ASN1_INTEGER* serial = nullptr;
      OCSP_id_get0_info(nullptr, nullptr, nullptr, &serial, id);
      const auto it = idx.find(index_serial_of(serial));
      if (it != idx.end()) entry = &it->second;
    }
    int status = V_OCSP_CERTSTATUS_UNKNOWN, reason = OCSP_REVOKED_STATUS_NOSTATUS;
    Asn1TimePtr revoked_at;
    if (entry != nullptr && entry->status != 'R') status = V_OCSP_CERTSTATUS_GOOD;
    if (entry != nullptr && entry->status == 'R') {
      status = V_OCSP_CERTSTATUS_REVOKED;
      revoked_at = to_asn1_time(entry->revoked_at.value_or(TimePoint{}));
      // RFC 5280 §5.3.1: leave the reason out rather than say "unspecified".
      if (entry->reason != RevocationReason::unspecified) reason = static_cast<int>(entry->reason);
    }
    if (OCSP_basic_add1_status(bs, id, status, reason, revoked_at.get(), this_update.get(),
                               next_update.get()) == nullptr) {
      return std::nullopt;
    }
  }
  return ours;
}

ByteVec OcspResponder::Impl::sign(OCSP_BASICRESP* bs, TimePoint now) const {
  // producedAt from the injected clock rather than OpenSSL's (OCSP_NOTIME), so an answer is a
  // function of the Clock like everything else here.
  auto* produced = const_cast<ASN1_GENERALIZEDTIME*>(OCSP_resp_get0_produced_at(bs));
  if (produced == nullptr ||
      ASN1_GENERALIZEDTIME_set(produced, std::chrono::system_clock::to_time_t(now)) == nullptr ||
      OCSP_basic_sign(bs, signer.get(), key.get(), EVP_sha256(), nullptr,
                      OCSP_RESPID_KEY | OCSP_NOTIME) != 1) {
    ERR_clear_error();
    return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
  }
  OcspResponsePtr response(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs));
  ByteVec der = response ? der_of<OCSP_RESPONSE>(response.get(), i2d_OCSP_RESPONSE) : ByteVec{};
  if (der.empty()) {
    ERR_clear_error();
    return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
  }
  return der;
}

ByteVec OcspResponder::Impl::answer(OCSP_REQUEST* req) {
  if (!nonce_acceptable(req)) return status_only(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  auto idx = current_index();
  if (!idx) return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
  const TimePoint now = clock->now();
  OcspBasicPtr bs(OCSP_BASICRESP_new());
  const auto ours = bs ? add_statuses(bs.get(), req, **idx, now) : std::nullopt;
  if (!ours) {
    ERR_clear_error();
    return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
  }
  if (*ours == 0) return status_only(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
  if (OCSP_copy_nonce(bs.get(), req) == 0) {  // 2: no nonce to copy
    ERR_clear_error();
    return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
  }
  return sign(bs.get(), now);
}

OcspResponder::OcspResponder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
OcspResponder::OcspResponder(OcspResponder&&) noexcept = default;
OcspResponder& OcspResponder::operator=(OcspResponder&&) noexcept = default;
OcspResponder::~OcspResponder() = default;

namespace {

// The signer may answer for ca: it is the CA itself, or a certificate the CA issued with the
// OCSPSigning EKU; and key is its private key.
Result<void> check_signer(X509* ca, X509* signer, EVP_PKEY* key) {
  if (X509_check_private_key(signer, key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument, "--signer: the key does not match the certificate");
  }
  if (X509_cmp(ca, signer) == 0) return {};
  if (X509_check_issued(ca, signer) != X509_V_OK ||
      X509_verify(signer, X509_get0_pubkey(ca)) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument,
                "--signer: neither the CA nor a certificate the CA issued");
  }
  const bool has_eku = (X509_get_extension_flags(signer) & EXFLAG_XKUSAGE) != 0;
  if (!has_eku || (X509_get_extended_key_usage(signer) & XKU_OCSP_SIGN) == 0) {
    return fail(ErrorCode::invalid_argument,
                "--signer: the certificate lacks the OCSPSigning extended key usage "
                "(issue it with --profile ocsp-signing)");
  }
  return {};
}

}  // namespace

Result<OcspResponder> OcspResponder::create(const std::string& ca_dir, X509* signer,
                                            EVP_PKEY* signer_key, const Clock& clock,
                                            OcspResponderOptions options) {
  if (signer == nullptr || signer_key == nullptr) {
    return fail(ErrorCode::missing_argument, "--signer: a certificate and its key");
  }
  if (options.validity < std::chrono::seconds(1)) {
    return fail(ErrorCode::invalid_argument, "--validity: at least 1 second");
  }
  auto ca = load_certificate(ca_dir + "/ca.pem");
  if (!ca) return std::unexpected(ca.error());
  if (auto r = check_signer(ca->get(), signer, signer_key); !r) return std::unexpected(r.error());
  auto impl = std::make_unique<Impl>();
  impl->ca = std::move(*ca);
  impl->signer = up_ref(signer);
  impl->key = up_ref(signer_key);
  impl->index_path = ca_dir + "/index.txt";
  impl->clock = &clock;
  impl->options = options;
  if (auto r = impl->compute_issuer_ids(); !r) return std::unexpected(r.error());
  // Read now, so a missing or corrupt index is a start-up error rather than a stream of
  // internalError answers.
  if (auto idx = impl->current_index(); !idx) return std::unexpected(idx.error());
  return OcspResponder(std::move(impl));
}

Result<OcspResponder> OcspResponder::open(const std::string& ca_dir,
                                          const std::string& signer_prefix, const Clock& clock,
                                          OcspResponderOptions options) {
  auto signer = load_key_pair(signer_prefix);
  if (!signer) return std::unexpected(signer.error());
  return create(ca_dir, signer->cert(), signer->key.get(), clock, options);
}

ByteVec OcspResponder::respond(ByteView request_der) const {
  OcspRequestPtr req = parse_request(request_der);
  if (!req) return status_only(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  return impl_->answer(req.get());
}

OcspHttpReply OcspResponder::respond_http(std::string_view method, std::string_view target,
                                          ByteView body) const {
  if (method == "POST") return ocsp_http_reply(respond(body));
  if (method == "GET") {
    OcspRequestPtr req = request_from_get_target(target);
    return ocsp_http_reply(req ? impl_->answer(req.get())
                               : status_only(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST));
  }
  OcspHttpReply r;
  r.status = 405;
  r.content_type = "text/plain";
  static constexpr std::string_view kText = "OCSP: GET or POST (RFC 6960 Appendix A)\n";
  r.body.assign(kText.begin(), kText.end());
  r.headers.emplace_back("Allow", "GET, POST");
  return r;
}

std::uint64_t OcspResponder::index_loads() const {
  std::lock_guard lock(impl_->mu);
  return impl_->loads;
}

}  // namespace mcim::pki
