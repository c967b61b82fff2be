// `mcim pki package seal|open|verify`: MCIM packages on the command line (docs/mcim-package.md).
// seal is the SHO's step 11, verify the DPF's relay check (no decryption), open the TRE's
// step 13. Documents are files in the canonical "mcim/1" form; decrypted ones are written 0600.
#include <fmt/format.h>

#include <ctime>
#include <memory>

#include "cli/pki_command.h"
#include "common/clock.h"
#include "common/file.h"
#include "pki/package.h"
#include "pki/signed_json.h"
#include "pki/verify.h"

namespace mcim::cli {
namespace {

using namespace mcim::pki;

struct SealArgs {
  std::string signer, recipient, in, out, chain;
};

struct OpenArgs {
  std::string key, cert, ca_file, in, out;
};

struct VerifyArgs {
  std::string ca_file, in;
};

// The file's bytes hold K and OPc in hex: they are wiped as soon as they are decoded.
Result<McimDocument> read_document(const std::string& path) {
  auto data = read_file(path);
  if (!data) return std::unexpected(data.error());
  const SecretBytes raw(std::move(*data));
  auto doc = decode_document(raw.view());
  if (!doc) return fail(doc.error().code, fmt::format("{}: {}", path, doc.error().message));
  return doc;
}

Fields document_fields(const McimDocument& doc) {
  Fields f;
  f.add("package_id", doc.package_id).add("device_id", doc.device_id).add("imsi", doc.imsi);
  f.add("algorithm", std::string(to_string(doc.algorithm))).add("owner", doc.policy.owner);
  f.add("sequence", std::to_string(doc.sequence));
  f.add("not_before", utc_text(doc.not_before)).add("not_after", utc_text(doc.not_after));
  return f;
}

Result<ByteVec> seal(const SealArgs& a, const McimDocument& doc) {
  auto pair = load_key_pair(a.signer);
  if (!pair) return std::unexpected(pair.error());
  auto recipient = load_certificate(a.recipient);
  if (!recipient) return std::unexpected(recipient.error());
  std::vector<X509Ptr> chain;
  if (!a.chain.empty()) {
    auto c = load_certificates(a.chain);
    if (!c) return std::unexpected(c.error());
    chain = std::move(*c);
  }
  PackageSigner signer{pair->cert(), pair->key.get(), {}};
  for (const auto& c : chain) signer.chain.push_back(c.get());
  return seal_package(doc, signer, recipient->get());
}

Result<Fields> run_seal(const SealArgs& a) {
  for (auto [value, option] : {std::pair{&a.signer, "--signer"},
                               {&a.recipient, "--recipient"},
                               {&a.in, "--in"},
                               {&a.out, "--out"}}) {
    if (auto r = require(*value, option); !r) return std::unexpected(r.error());
  }
  auto doc = read_document(a.in);
  if (!doc) return std::unexpected(doc.error());
  auto pkg = seal(a, *doc);
  if (!pkg) return std::unexpected(pkg.error());
  if (auto w = write_file_atomic(a.out, ByteView(*pkg), 0644); !w)
    return std::unexpected(w.error());
  Fields f = document_fields(*doc);
  f.add("package", a.out).add("bytes", std::to_string(pkg->size()));
  return f;
}

Result<Fields> run_open(const OpenArgs& a) {
  for (auto [value, option] : {std::pair{&a.key, "--recipient-key"},
                               {&a.cert, "--recipient-cert"},
                               {&a.ca_file, "--ca-file"},
                               {&a.in, "--in"},
                               {&a.out, "--out"}}) {
    if (auto r = require(*value, option); !r) return std::unexpected(r.error());
  }
  auto anchors = TrustAnchors::from_file(a.ca_file);
  if (!anchors) return std::unexpected(anchors.error());
  auto cert = load_certificate(a.cert);
  if (!cert) return std::unexpected(cert.error());
  auto key = load_private_key(a.key);
  if (!key) return std::unexpected(key.error());
  auto recipient = PackageRecipient::create(cert->get(), key->get());
  if (!recipient) return std::unexpected(recipient.error());
  auto pkg = read_file(a.in);
  if (!pkg) return std::unexpected(pkg.error());
  SystemClock clock;
  auto doc = open_package(*pkg, *recipient, *anchors, clock);
  if (!doc) return fail(doc.error().code, fmt::format("{}: {}", a.in, doc.error().message));
  auto canonical = encode_document(*doc);
  if (!canonical) return std::unexpected(canonical.error());
  if (auto w = write_file_atomic(a.out, canonical->view(), 0600); !w) {
    return std::unexpected(w.error());
  }
  Fields f = document_fields(*doc);
  f.add("document", a.out).add("status", "opened");
  return f;
}

Result<Fields> run_verify(const VerifyArgs& a) {
  if (auto r = require(a.ca_file, "--ca-file"); !r) return std::unexpected(r.error());
  if (auto r = require(a.in, "--in"); !r) return std::unexpected(r.error());
  auto anchors = TrustAnchors::from_file(a.ca_file);
  if (!anchors) return std::unexpected(anchors.error());
  auto pkg = read_file(a.in);
  if (!pkg) return std::unexpected(pkg.error());
  SystemClock clock;
  auto info = verify_package_signature(*pkg, *anchors, clock);
  if (!info) return fail(info.error().code, fmt::format("{}: {}", a.in, info.error().message));
  Fields f;
  f.add("operator", info->operator_id).add("signer", subject_text(info->signer.get()));
  f.add("serial", serial_hex(info->signer.get())).add("chain", std::to_string(info->chain.size()));
  f.add("sealed_bytes", std::to_string(info->sealed.size())).add("status", "valid");
  return f;
}

}  // namespace

void register_pki_package(CLI::App& pki, Result<Fields>* result) {
  auto* package =
      pki.add_subcommand("package", "MCIM packages: seal (SHO), verify (DPF), open (TRE)");
  package->require_subcommand(1);

  auto seal_args = std::make_shared<SealArgs>();
  auto* seal = package->add_subcommand("seal", "encrypt a document to a TRE and sign it");
  seal->add_option("--signer", seal_args->signer,
                   "package-signing PREFIX (PREFIX.pem, PREFIX.key)");
  seal->add_option("--recipient", seal_args->recipient, "the TRE's platform certificate");
  seal->add_option("--in", seal_args->in, "the canonical mcim/1 document");
  seal->add_option("--out", seal_args->out, "the package to write (DER)");
  seal->add_option("--chain", seal_args->chain, "intermediate CA certificates to include, PEM");
  seal->callback([seal_args, result] { *result = run_seal(*seal_args); });

  auto verify_args = std::make_shared<VerifyArgs>();
  auto* verify =
      package->add_subcommand("verify", "check a package's signature without decrypting");
  verify->add_option("--ca-file", verify_args->ca_file, "the operator root certificate(s), PEM");
  verify->add_option("--in", verify_args->in, "the package (DER)");
  verify->callback([verify_args, result] { *result = run_verify(*verify_args); });

  auto open_args = std::make_shared<OpenArgs>();
  auto* open = package->add_subcommand("open", "verify, decrypt and check a package for this TRE");
  open->add_option("--recipient-key", open_args->key, "the TRE's platform private key");
  open->add_option("--recipient-cert", open_args->cert, "the TRE's platform certificate");
  open->add_option("--ca-file", open_args->ca_file, "the operator root certificate(s), PEM");
  open->add_option("--in", open_args->in, "the package (DER)");
  open->add_option("--out", open_args->out, "where to write the document (mode 0600)");
  open->callback([open_args, result] { *result = run_open(*open_args); });
}

}  // namespace mcim::cli
