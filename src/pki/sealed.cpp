#include "pki/sealed.h"

#include <fmt/format.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "pki/certificate.h"
#include "pki/certificate_cache.h"

namespace mcim::pki {
namespace {

using CmsPtr = Owned<CMS_ContentInfo, CMS_ContentInfo_free>;

constexpr std::size_t kMaxIdLength = 64;

bool is_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

// "urn:mcim:operator:" -> "operator": how messages name the party a signer speaks for.
std::string_view role_of(std::string_view urn_prefix) {
  std::string_view p = urn_prefix;
  if (!p.empty() && p.back() == ':') p.remove_suffix(1);
  const auto colon = p.rfind(':');
  return colon == std::string_view::npos ? p : p.substr(colon + 1);
}

std::string size_text(std::size_t n) {
  if (n % (1024 * 1024) == 0) return fmt::format("{} MiB", n / (1024 * 1024));
  if (n % 1024 == 0) return fmt::format("{} KiB", n / 1024);
  return fmt::format("{} bytes", n);
}

// =============================================================================================
// The outer SignedData's profile. OpenSSL ignores some fields no signature covers (the CMS
// versions, the digestAlgorithms set, AlgorithmIdentifier parameters); checking them byte for
// byte means no single changed byte of an envelope goes unnoticed. Of the other unsigned bytes,
// the sid is compared byte for byte with the signer's certificate (find_signer), certificates
// carry their own signatures and must all be on the verified path, and the signature value is
// verified.

struct Der {
  std::uint8_t tag = 0;
  ByteView value, whole;
};

// One TLV with a definite, minimally encoded length (X.690 §10.1); nullopt otherwise.
std::optional<Der> read_der(ByteView& in, std::uint8_t expected_tag) {
  if (in.size() < 2 || in[0] != expected_tag) return std::nullopt;
  std::size_t len = in[1];
  std::size_t header = 2;
  if ((len & 0x80) != 0) {
    const std::size_t n = len & 0x7f;
    if (n == 0 || n > 3 || in.size() < 2 + n || in[2] == 0) return std::nullopt;
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | in[2 + i];
    if (len < 0x80) return std::nullopt;
    header = 2 + n;
  }
  if (in.size() - header < len) return std::nullopt;
  Der d{expected_tag, in.subspan(header, len), in.first(header + len)};
  in = in.subspan(header + len);
  return d;
}

bool equals(ByteView a, ByteView b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); }

// DER of the fixed parts. OpenSSL writes SHA-256 and ECDSA-with-SHA-256 identifiers without
// parameters (RFC 5754 §2, §3.3).
constexpr std::array<std::uint8_t, 11> kOidSignedData = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                         0xf7, 0x0d, 0x01, 0x07, 0x02};
constexpr std::array<std::uint8_t, 11> kOidData = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                   0xf7, 0x0d, 0x01, 0x07, 0x01};
constexpr std::array<std::uint8_t, 13> kSha256 = {0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
                                                  0x01, 0x65, 0x03, 0x04, 0x02, 0x01};
constexpr std::array<std::uint8_t, 15> kDigestAlgorithms = {
    0x31, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01};
constexpr std::array<std::uint8_t, 12> kEcdsaSha256 = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                                       0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
constexpr std::array<std::uint8_t, 1> kVersion1 = {0x01};

// A refusal of the outer profile; `what` names the envelope ("package"), `part` the field.
class ProfileCheck {
 public:
  explicit ProfileCheck(std::string_view what) : what_(what) {}

  std::unexpected<Error> refuse(std::string_view part) const {
    return fail(ErrorCode::bad_format,
                fmt::format("{}: not a DER CMS SignedData of the mcim profile ({})", what_, part));
  }

 private:
  std::string_view what_;
};

// SignerInfo ::= SEQUENCE { version 1, sid IssuerAndSerialNumber, digestAlgorithm sha256,
//   [0] signedAttrs, signatureAlgorithm ecdsa-with-SHA256, signature OCTET STRING } (RFC 5652 §5.3)
// Returns the sid's DER.
Result<ByteView> check_signer_info(ByteView set, const ProfileCheck& p) {
  auto si = read_der(set, 0x30);
  if (!si || !set.empty()) return p.refuse("exactly one SignerInfo");
  ByteView x = si->value;
  auto version = read_der(x, 0x02);
  if (!version || !equals(version->value, kVersion1)) return p.refuse("SignerInfo version");
  auto sid = read_der(x, 0x30);
  if (!sid) return p.refuse("signer identifier");
  auto digest = read_der(x, 0x30);
  if (!digest || !equals(digest->whole, kSha256)) return p.refuse("digest algorithm");
  if (!read_der(x, 0xa0)) return p.refuse("signed attributes");
  auto sigalg = read_der(x, 0x30);
  if (!sigalg || !equals(sigalg->whole, kEcdsaSha256)) return p.refuse("signature algorithm");
  if (!read_der(x, 0x04) || !x.empty()) return p.refuse("signature, no unsigned attributes");
  return sid->whole;
}

// Where the profile check found the parts the verification needs, as views into the envelope.
struct OuterParts {
  ByteView version, digests, encap, signers;  // whole TLVs of the SignedData
  ByteView certificates;                      // the content of [0] certificates
  ByteView content;                           // the eContent octets: the sealed AuthEnvelopedData
  ByteView sid;                               // the SignerInfo's IssuerAndSerialNumber
};

// { data, [0] OCTET STRING }: the eContent octets.
Result<ByteView> check_encapsulated(ByteView encap, const ProfileCheck& p) {
  auto etype = read_der(encap, 0x06);
  if (!etype || !equals(etype->whole, kOidData)) return p.refuse("eContentType");
  auto econtent = read_der(encap, 0xa0);
  if (!econtent || !encap.empty()) return p.refuse("eContent");
  ByteView oct = econtent->value;
  auto octets = read_der(oct, 0x04);
  if (!octets || !oct.empty()) return p.refuse("eContent octets");
  return octets->value;
}

// SignedData { version 1, {sha256}, encapContentInfo, [0] certificates, signerInfos }, no CRLs.
Result<OuterParts> check_signed_data(ByteView s, const ProfileCheck& p) {
  auto version = read_der(s, 0x02);
  if (!version || !equals(version->value, kVersion1)) return p.refuse("SignedData version");
  auto digests = read_der(s, 0x31);
  if (!digests || !equals(digests->whole, kDigestAlgorithms)) return p.refuse("digestAlgorithms");
  auto encap = read_der(s, 0x30);
  if (!encap) return p.refuse("encapsulated content");
  auto octets = check_encapsulated(encap->value, p);
  if (!octets) return std::unexpected(octets.error());
  auto certs = read_der(s, 0xa0);
  if (!certs) return p.refuse("certificates");
  auto signers = read_der(s, 0x31);
  if (!signers || !s.empty()) return p.refuse("signerInfos, no CRLs");
  auto sid = check_signer_info(signers->value, p);
  if (!sid) return std::unexpected(sid.error());
  return OuterParts{version->whole, digests->whole, encap->whole, signers->whole,
                    certs->value,   *octets,        *sid};
}

// ContentInfo { signedData, [0] SignedData } (RFC 5652 §5.1), nothing after.
Result<OuterParts> check_outer_profile(ByteView der, const ProfileCheck& p) {
  auto ci = read_der(der, 0x30);
  if (!ci || !der.empty()) return p.refuse("ContentInfo");
  ByteView c = ci->value;
  auto type = read_der(c, 0x06);
  if (!type || !equals(type->whole, kOidSignedData)) return p.refuse("content type");
  auto explicit0 = read_der(c, 0xa0);
  if (!explicit0 || !c.empty()) return p.refuse("content");
  ByteView e = explicit0->value;
  auto sd = read_der(e, 0x30);
  if (!sd || !e.empty()) return p.refuse("SignedData");
  return check_signed_data(sd->value, p);
}

// DER length octets (X.690 §8.1.3.4-5): the short form below 128, else the minimal long form.
void append_length(ByteVec& out, std::size_t n) {
  if (n < 0x80) {
    out.push_back(static_cast<std::uint8_t>(n));
    return;
  }
  std::uint8_t octets[sizeof n];
  std::size_t count = 0;
  for (std::size_t v = n; v != 0; v >>= 8) octets[count++] = static_cast<std::uint8_t>(v & 0xff);
  out.push_back(static_cast<std::uint8_t>(0x80 | count));
  while (count > 0) out.push_back(octets[--count]);
}

void append_tlv(ByteVec& out, std::uint8_t tag, ByteView content) {
  out.push_back(tag);
  append_length(out, content.size());
  out.insert(out.end(), content.begin(), content.end());
}

// The envelope without its certificates field, for d2i: OpenSSL 3.0 spends ~90 us decoding each
// certificate's public key, so certificates go through the cache below instead.
ByteVec without_certificates(const OuterParts& p) {
  ByteVec sd;
  for (ByteView part : {p.version, p.digests, p.encap, p.signers}) {
    sd.insert(sd.end(), part.begin(), part.end());
  }
  ByteVec explicit0, content_info(kOidSignedData.begin(), kOidSignedData.end()), out;
  append_tlv(explicit0, 0x30, sd);
  append_tlv(content_info, 0xa0, explicit0);
  append_tlv(out, 0x30, content_info);
  return out;
}

// =============================================================================================
// OpenSSL plumbing

ByteVec cms_der(CMS_ContentInfo* cms) { return der_of<CMS_ContentInfo>(cms, i2d_CMS_ContentInfo); }

// Parses one CMS ContentInfo that must span all of `der` and re-encode to the same bytes.
CmsPtr parse_cms_exact(ByteView der) {
  const unsigned char* p = der.data();
  CmsPtr cms(d2i_CMS_ContentInfo(nullptr, &p, static_cast<long>(der.size())));
  if (!cms || p != der.data() + der.size()) return nullptr;
  const ByteVec again = cms_der(cms.get());
  if (!std::equal(again.begin(), again.end(), der.begin(), der.end())) return nullptr;
  return cms;
}

// Certificates in DER (X.690 §10): one that does not re-encode to the same bytes is refused.
Result<X509Ptr> parse_exact_der(ByteView der) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != der.data() + der.size()) {
    return fail(ErrorCode::bad_format, "not a DER X.509 certificate");
  }
  const ByteVec again = certificate_der(cert.get());
  if (!std::equal(again.begin(), again.end(), der.begin(), der.end())) {
    return fail(ErrorCode::bad_format, "not a DER X.509 certificate");
  }
  return cert;
}

// The certificates of CMS envelopes (a TRE or a relay sees the same few signer chains again and
// again), parsed by parse_exact_der: a cache of their own, so that only bytes that passed the
// strict parse are ever found in it. Never destroyed: it would free X509 objects during static
// destruction, perhaps after OpenSSL's own cleanup.
CertificateCache& envelope_certificates() {
  static auto* cache = new CertificateCache();
  return *cache;
}

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::floor<std::chrono::seconds>(t).time_since_epoch().count();
}

VerifiedChain copy_of(const VerifiedChain& path) {
  VerifiedChain out;
  for (const auto& c : path.chain) out.chain.push_back(up_ref(c.get()));
  return out;
}

// Signer paths verify_chain accepted, so that opening many envelopes from the same signer pays
// for the path's certificate signatures once. An entry is keyed by the trust store (held by a
// reference, so its address cannot be reused while the entry exists) and the SHA-256 of the
// purpose, the envelope's certificates field and its signer identifier; it answers only at
// times inside every certificate's validity window, which is the only input verify_chain's
// verdict depends on beyond those. Failures are never cached (they are recomputed, with their
// precise error). Bounded: it starts over when full. Thread-safe.
class VerifiedPathCache {
 public:
  std::optional<VerifiedChain> find(X509_STORE* store, const Bytes<32>& key, TimePoint at) {
    const std::int64_t t = unix_seconds(at);
    std::lock_guard lock(mutex_);
    const auto it = entries_.find({store, key});
    if (it == entries_.end() || t < it->second.valid_from || t >= it->second.valid_until) {
      return std::nullopt;
    }
    return copy_of(it->second.path);
  }

  void add(X509_STORE* store, const Bytes<32>& key, const VerifiedChain& path) {
    Entry e{X509StorePtr(store), copy_of(path), INT64_MIN, INT64_MAX};
    X509_STORE_up_ref(store);
    for (const auto& c : path.chain) {
      e.valid_from = std::max(e.valid_from, unix_seconds(not_before(c.get())));
      e.valid_until = std::min(e.valid_until, unix_seconds(not_after(c.get())));
    }
    std::lock_guard lock(mutex_);
    if (entries_.size() >= kMaxEntries) entries_.clear();
    entries_.insert_or_assign({store, key}, std::move(e));
  }

 private:
  struct Entry {
    X509StorePtr store;  // keeps the key's address in use
    VerifiedChain path;
    std::int64_t valid_from, valid_until;  // [from, until), as OpenSSL compares
  };
  static constexpr std::size_t kMaxEntries = 64;
  std::mutex mutex_;
  std::map<std::pair<X509_STORE*, Bytes<32>>, Entry> entries_;  // guarded by mutex_
};

VerifiedPathCache& verified_path_cache() {
  static auto* cache = new VerifiedPathCache();  // never destroyed, as envelope_certificates()
  return *cache;
}

// The certificates field's content: a SET OF Certificate, nothing else (no attribute certs).
Result<std::vector<X509Ptr>> parse_certificates(ByteView set, const SignerPolicy& policy) {
  std::vector<X509Ptr> certs;
  while (!set.empty()) {
    auto tlv = read_der(set, 0x30);
    auto cert = tlv ? envelope_certificates().parse(tlv->whole, parse_exact_der)
                    : Result<X509Ptr>(fail(ErrorCode::bad_format, "not DER"));
    if (!cert) {
      ERR_clear_error();
      return fail(ErrorCode::bad_format,
                  fmt::format("{}: a certificate is not a DER X.509 certificate", policy.what));
    }
    certs.push_back(std::move(*cert));
  }
  return certs;
}

std::uint32_t xku_flag(SignerEku eku) {
  switch (eku) {
    case SignerEku::email_protection: return XKU_SMIME;
    case SignerEku::server_auth: return XKU_SSL_SERVER;
    case SignerEku::client_auth: return XKU_SSL_CLIENT;
    case SignerEku::code_signing: return XKU_CODE_SIGN;
  }
  return 0;
}

// An explicit EKU extension with the policy's usage: the S/MIME purpose alone would also pass
// certificates without any EKU (result-signing).
bool has_policy_eku(X509* cert, SignerEku eku) {
  return (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0 &&
         (X509_get_extended_key_usage(cert) & xku_flag(eku)) != 0;
}

// =============================================================================================
// Sealing

Result<ByteVec> encrypt_to(ByteView plaintext, X509* recipient) {
  CmsPtr cms(CMS_AuthEnvelopedData_create(EVP_aes_256_gcm()));
  // Created with detached content (CMS_encrypt would attach it): the ciphertext belongs inside.
  if (!cms || CMS_set_detached(cms.get(), 0) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "AuthEnvelopedData"));
  }
  CMS_RecipientInfo* ri = CMS_add1_recipient_cert(cms.get(), recipient, CMS_KEY_PARAM);
  EVP_PKEY_CTX* pctx = ri != nullptr ? CMS_RecipientInfo_get0_pkey_ctx(ri) : nullptr;
  // OpenSSL's ECDH KDF defaults to SHA-1; SHA-256 (dhSinglePass-stdDH-sha256kdf-scheme,
  // RFC 5753) matches P-256 and AES-256, and is what docs/mcim-package.md names.
  if (pctx == nullptr || EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) <= 0) {
    return std::unexpected(
        openssl_error(ErrorCode::invalid_argument, "recipient: ECDH key agreement"));
  }
  // An empty view may have no address, which OpenSSL's memory BIO refuses.
  static constexpr std::uint8_t kNothing = 0;
  BioPtr in = memory_bio(plaintext.empty() ? ByteView(&kNothing, 0) : plaintext);
  if (!in || CMS_final(cms.get(), in.get(), nullptr, CMS_BINARY) != 1) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encrypting the content"));
  }
  ByteVec der = cms_der(cms.get());
  if (der.empty()) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encoding AuthEnvelopedData"));
  }
  return der;
}

Result<ByteVec> sign_content(ByteView content, const SealSigner& signer) {
  STACK_OF(X509)* chain = sk_X509_new_null();
  for (X509* c : signer.chain) sk_X509_push(chain, c);
  BioPtr in = memory_bio(content);
  // No S/MIME capabilities attribute: nothing in mcim negotiates by it.
  CmsPtr cms(CMS_sign(signer.cert, signer.key, chain, in.get(), CMS_BINARY | CMS_NOSMIMECAP));
  sk_X509_free(chain);
  if (!cms) return std::unexpected(openssl_error(ErrorCode::internal, "signing the content"));
  ByteVec der = cms_der(cms.get());
  if (der.empty()) {
    return std::unexpected(openssl_error(ErrorCode::internal, "encoding SignedData"));
  }
  return der;
}

Result<void> check_seal_inputs(const SealSigner& signer, X509* recipient) {
  if (signer.cert == nullptr || signer.key == nullptr) {
    return fail(ErrorCode::missing_argument, "signer: certificate and key required");
  }
  if (recipient == nullptr) {
    return fail(ErrorCode::missing_argument, "recipient: certificate required");
  }
  if (X509_check_private_key(signer.cert, signer.key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::invalid_argument, "signer: the key does not belong to the certificate");
  }
  const EVP_PKEY* public_key = X509_get0_pubkey(recipient);
  if (public_key == nullptr || EVP_PKEY_get_base_id(public_key) != EVP_PKEY_EC) {
    return fail(ErrorCode::invalid_argument, "recipient: not an EC certificate");
  }
  // Absent key usage allows everything (RFC 5280 §4.2.1.3); OpenSSL reports all bits then.
  if ((X509_get_key_usage(recipient) & KU_KEY_AGREEMENT) == 0) {
    return fail(ErrorCode::invalid_argument,
                "recipient: its key usage does not allow keyAgreement (ECDH)");
  }
  return {};
}

// =============================================================================================
// Verifying

// DER of IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER } for cert.
ByteVec issuer_and_serial(X509* cert) {
  unsigned char* name = nullptr;
  unsigned char* serial = nullptr;
  const int n = i2d_X509_NAME(X509_get_issuer_name(cert), &name);
  const int m = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &serial);
  ByteVec out;
  if (n > 0 && m > 0) {
    ByteVec content(name, name + n);
    content.insert(content.end(), serial, serial + m);
    append_tlv(out, 0x30, content);
  }
  OPENSSL_free(name);
  OPENSSL_free(serial);
  return out;
}

// The certificate whose issuer and serial are exactly the sid's bytes. OpenSSL's own match
// (CMS_SignerInfo_cert_cmp) compares names case- and space-insensitively, so a changed letter in
// the unsigned sid would go unnoticed.
Result<X509*> find_signer(ByteView sid, const std::vector<X509Ptr>& certs,
                          const SignerPolicy& policy) {
  for (const auto& c : certs) {
    const ByteVec expected = issuer_and_serial(c.get());
    if (std::equal(sid.begin(), sid.end(), expected.begin(), expected.end())) return c.get();
  }
  return fail(ErrorCode::signature_invalid,
              fmt::format("{}: no certificate matches the signer identifier", policy.what));
}

// Every certificate carried must be on the verified path: an unused one could be altered
// without any signature noticing.
Result<void> check_all_on_path(const std::vector<X509Ptr>& certs, const VerifiedChain& path,
                               const SignerPolicy& policy) {
  for (const auto& c : certs) {
    const bool on_path = std::any_of(path.chain.begin(), path.chain.end(), [&](const X509Ptr& p) {
      return X509_cmp(p.get(), c.get()) == 0;
    });
    if (!on_path) {
      return fail(ErrorCode::bad_format,
                  fmt::format("{}: a certificate outside the signer's chain", policy.what));
    }
  }
  return {};
}

// The signed attributes: contentType id-data and a messageDigest over eContent (RFC 5652 §11).
Result<void> check_signed_attributes(CMS_SignerInfo* si, ByteView content,
                                     const SignerPolicy& policy) {
  const auto* type = static_cast<const ASN1_OBJECT*>(
      CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_pkcs9_contentType), -3, V_ASN1_OBJECT));
  if (type == nullptr || OBJ_obj2nid(type) != NID_pkcs7_data) {
    ERR_clear_error();
    return fail(
        ErrorCode::bad_format,
        fmt::format("{}: signed contentType attribute missing or not id-data", policy.what));
  }
  const auto* digest = static_cast<const ASN1_OCTET_STRING*>(CMS_signed_get0_data_by_OBJ(
      si, OBJ_nid2obj(NID_pkcs9_messageDigest), -3, V_ASN1_OCTET_STRING));
  if (digest == nullptr) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format,
                fmt::format("{}: signed messageDigest attribute missing", policy.what));
  }
  const Bytes<32> actual = sha256(content);
  const ByteView signed_digest(ASN1_STRING_get0_data(digest),
                               static_cast<std::size_t>(ASN1_STRING_length(digest)));
  if (!std::equal(actual.begin(), actual.end(), signed_digest.begin(), signed_digest.end())) {
    return fail(ErrorCode::package_tampered,
                fmt::format("{}: content does not match the signed digest", policy.what));
  }
  return {};
}

// The signer's path to the trust anchors with the policy's purpose, from the cache when this
// store accepted the same certificates for the same purpose before. `parts` are views into the
// envelope bytes, equal to the parsed CMS's since the envelope re-encodes to itself.
Result<VerifiedChain> verify_signer_path(const TrustAnchors& anchors, X509* signer,
                                         const std::vector<X509Ptr>& certs, const OuterParts& parts,
                                         TimePoint now, Purpose purpose) {
  ByteVec id{static_cast<std::uint8_t>(purpose)};
  id.insert(id.end(), parts.certificates.begin(), parts.certificates.end());
  id.insert(id.end(), parts.sid.begin(), parts.sid.end());
  const Bytes<32> key = sha256(id);
  if (auto hit = verified_path_cache().find(anchors.store(), key, now)) return std::move(*hit);
  std::vector<X509*> untrusted;
  for (const auto& c : certs) untrusted.push_back(c.get());
  auto path = verify_chain(anchors, signer, untrusted, now, purpose);
  if (path) verified_path_cache().add(anchors.store(), key, *path);
  return path;
}

// The signer's certificate has the policy's profile: its explicit EKU.
Result<void> check_signer_profile(X509* signer, const SignerPolicy& policy) {
  if (!has_policy_eku(signer, policy.eku)) {
    return fail(ErrorCode::chain_invalid, fmt::format("signer: not a {} certificate (no {} EKU)",
                                                      policy.profile, to_string(policy.eku)));
  }
  return {};
}

// Who the signer speaks for: its SAN URI with the policy's prefix, a valid id.
Result<std::string> signer_identity(X509* signer, const SignerPolicy& policy) {
  auto id = san_uri_with_prefix(signer, policy.urn_prefix);
  if (policy.urn_prefix.empty() || !id || !valid_mcim_id(*id)) {
    return fail(ErrorCode::chain_invalid,
                fmt::format("signer: certificate names no {} (SAN URI {}<id>)",
                            role_of(policy.urn_prefix), policy.urn_prefix));
  }
  return std::move(*id);
}

Result<SignedEnvelopeInfo> verify_signer(CMS_ContentInfo* cms, const OuterParts& parts,
                                         TimePoint now, const TrustAnchors& anchors,
                                         const SignerPolicy& policy) {
  CMS_SignerInfo* si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
  auto parsed = parse_certificates(parts.certificates, policy);
  if (!parsed) return std::unexpected(parsed.error());
  const std::vector<X509Ptr>& certs = *parsed;
  auto signer = find_signer(parts.sid, certs, policy);
  if (!signer) return std::unexpected(signer.error());
  if (auto profile = check_signer_profile(*signer, policy); !profile) {
    return std::unexpected(profile.error());
  }
  auto path = verify_signer_path(anchors, *signer, certs, parts, now, policy.purpose);
  if (!path) return std::unexpected(path.error());
  if (auto on_path = check_all_on_path(certs, *path, policy); !on_path) {
    return std::unexpected(on_path.error());
  }
  auto signer_id = signer_identity(*signer, policy);
  if (!signer_id) return std::unexpected(signer_id.error());
  CMS_SignerInfo_set1_signer_cert(si, *signer);
  if (CMS_SignerInfo_verify(si) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::signature_invalid,
                fmt::format("{}: the signer's signature does not verify", policy.what));
  }
  if (auto attrs = check_signed_attributes(si, parts.content, policy); !attrs) {
    return std::unexpected(attrs.error());
  }
  return SignedEnvelopeInfo{up_ref(*signer), std::move(*signer_id), std::move(path->chain),
                            parts.content, now};
}

Result<SignedEnvelopeInfo> verify_signed(ByteView der, const TrustAnchors& anchors, TimePoint now,
                                         const SignerPolicy& policy) {
  if (der.empty()) return fail(ErrorCode::bad_format, fmt::format("{}: empty", policy.what));
  if (der.size() > policy.max_size) {
    return fail(ErrorCode::bad_format,
                fmt::format("{}: larger than {}", policy.what, size_text(policy.max_size)));
  }
  auto parts = check_outer_profile(der, ProfileCheck(policy.what));
  if (!parts) return std::unexpected(parts.error());
  CmsPtr cms = parse_cms_exact(without_certificates(*parts));
  if (!cms) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format, fmt::format("{}: not a DER CMS ContentInfo", policy.what));
  }
  return verify_signer(cms.get(), *parts, now, anchors, policy);
}

// =============================================================================================
// Opening

// The signed content: AuthEnvelopedData with one key-agreement recipient holding one key.
Result<CmsPtr> parse_sealed(ByteView der, const SignerPolicy& policy) {
  CmsPtr cms = parse_cms_exact(der);
  if (!cms || OBJ_obj2nid(CMS_get0_type(cms.get())) != NID_id_smime_ct_authEnvelopedData) {
    ERR_clear_error();
    return fail(ErrorCode::bad_format,
                fmt::format("{}: signed content is not a DER AuthEnvelopedData", policy.what));
  }
  STACK_OF(CMS_RecipientInfo)* ris = CMS_get0_RecipientInfos(cms.get());
  if (sk_CMS_RecipientInfo_num(ris) != 1 ||
      CMS_RecipientInfo_type(sk_CMS_RecipientInfo_value(ris, 0)) != CMS_RECIPINFO_AGREE ||
      sk_CMS_RecipientEncryptedKey_num(
          CMS_RecipientInfo_kari_get0_reks(sk_CMS_RecipientInfo_value(ris, 0))) != 1) {
    return fail(ErrorCode::bad_format,
                fmt::format("{}: expected exactly one key-agreement recipient", policy.what));
  }
  return cms;
}

Result<void> check_recipient(CMS_ContentInfo* sealed, X509* cert, const SignerPolicy& policy) {
  CMS_RecipientInfo* ri = sk_CMS_RecipientInfo_value(CMS_get0_RecipientInfos(sealed), 0);
  CMS_RecipientEncryptedKey* rek =
      sk_CMS_RecipientEncryptedKey_value(CMS_RecipientInfo_kari_get0_reks(ri), 0);
  if (CMS_RecipientEncryptedKey_cert_cmp(rek, cert) != 0) {
    return fail(ErrorCode::wrong_recipient,
                fmt::format("{}: encrypted to another {}", policy.what, policy.recipient));
  }
  return {};
}

// The plaintext goes into an OpenSSL secure-memory BIO (cleansed when freed, also as it grows),
// then into the wiped buffer returned; it is used only when CMS_decrypt succeeded (it writes
// output even on a bad GCM tag).
Result<SecretBytes> decrypt(CMS_ContentInfo* sealed, const SealedRecipient& r,
                            const SignerPolicy& policy) {
  BioPtr out(BIO_new(BIO_s_secmem()));
  if (!out) return std::unexpected(openssl_error(ErrorCode::internal, "BIO_new"));
  if (CMS_decrypt(sealed, r.key(), r.cert(), nullptr, out.get(), CMS_BINARY) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::package_tampered,
                fmt::format("{}: decryption failed (key unwrap or GCM tag)", policy.what));
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  ByteVec plain;
  plain.reserve(static_cast<std::size_t>(std::max(n, 0L)));  // no reallocation, no stray copy
  plain.insert(plain.end(), reinterpret_cast<const std::uint8_t*>(data),
               reinterpret_cast<const std::uint8_t*>(data) + std::max(n, 0L));
  return SecretBytes(std::move(plain));
}

}  // namespace

// =============================================================================================
// Public API

bool valid_mcim_id(std::string_view s) {
  return !s.empty() && s.size() <= kMaxIdLength && std::all_of(s.begin(), s.end(), is_id_char);
}

std::string_view to_string(SignerEku eku) {
  switch (eku) {
    case SignerEku::email_protection: return "emailProtection";
    case SignerEku::server_auth: return "serverAuth";
    case SignerEku::client_auth: return "clientAuth";
    case SignerEku::code_signing: return "codeSigning";
  }
  return "unknown";
}

Result<ByteVec> seal_signed(ByteView content, const SealSigner& signer, X509* recipient) {
  if (auto inputs = check_seal_inputs(signer, recipient); !inputs) {
    return std::unexpected(inputs.error());
  }
  auto sealed = encrypt_to(content, recipient);
  if (!sealed) return std::unexpected(sealed.error());
  return sign_content(*sealed, signer);
}

Result<SignedEnvelopeInfo> verify_sealed_signature(ByteView der, const TrustAnchors& anchors,
                                                   const Clock& clock, const SignerPolicy& policy) {
  return verify_signed(der, anchors, clock.now(), policy);
}

Result<SealedRecipient> SealedRecipient::create(X509* cert, EVP_PKEY* key) {
  if (cert == nullptr || key == nullptr) {
    return fail(ErrorCode::missing_argument, "recipient: certificate and key required");
  }
  if (X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    return fail(ErrorCode::wrong_recipient,
                "recipient: the key does not belong to the certificate");
  }
  return SealedRecipient(up_ref(cert), up_ref(key));
}

Result<OpenedEnvelope> open_sealed(ByteView der, const SealedRecipient& recipient,
                                   const TrustAnchors& anchors, const Clock& clock,
                                   const SignerPolicy& policy) {
  auto verified = verify_signed(der, anchors, clock.now(), policy);
  if (!verified) return std::unexpected(verified.error());
  auto sealed = parse_sealed(verified->sealed, policy);
  if (!sealed) return std::unexpected(sealed.error());
  if (auto r = check_recipient(sealed->get(), recipient.cert(), policy); !r) {
    return std::unexpected(r.error());
  }
  auto content = decrypt(sealed->get(), recipient, policy);
  if (!content) return std::unexpected(content.error());
  return OpenedEnvelope{std::move(*content), std::move(*verified)};
}

Result<OpenedEnvelope> open_sealed(ByteView der, X509* recipient_cert, EVP_PKEY* recipient_key,
                                   const TrustAnchors& anchors, const Clock& clock,
                                   const SignerPolicy& policy) {
  auto recipient = SealedRecipient::create(recipient_cert, recipient_key);
  if (!recipient) return std::unexpected(recipient.error());
  return open_sealed(der, *recipient, anchors, clock, policy);
}

}  // namespace mcim::pki
