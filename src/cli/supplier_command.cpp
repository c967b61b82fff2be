// `mcim supplier manufacture`: F0 for one device (docs/tre.md "Supplier bundle"). The RO's OP
// is required (--op or --op-file): OPc = f(K, OP) is only useful when the RO's ICF knows OP.
// Output names the bundle and what is printed on the device label; never K, OPc, OP nor PIN.
#include "cli/supplier_command.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <array>
#include <memory>
#include <optional>

#include "common/clock.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/random.h"
#include "common/secure.h"
#include "pki/authority.h"
#include "pki/signed_json.h"
#include "tre/bundle.h"

namespace mcim::cli {
namespace {

struct ManufactureArgs {
  std::string ca, pcid, out, ro_id, operator_roots, op, op_file, device_id, pin, ocsp_url;
  std::string model = "mcim-sw-tre-1";
  int days = 3650;
  int pcid_days = 730;
};

// manufacture() names ManufactureSpec fields ("pcid: ...", "operator_roots[1]: ..."); the
// user typed options.
Error in_option_terms(Error e) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kOptions = {{
      {"pcid", "--pcid"},
      {"device_id", "--device-id"},
      {"model", "--model"},
      {"ro_operator", "--ro-id"},
      {"pin", "--pin"},
      {"certificate_days", "--days"},
      {"pcid_days", "--pcid-days"},
      {"ocsp_url", "--ocsp-url"},
      {"operator_roots", "--operator-roots"},
  }};
  const std::string_view m = e.message;
  for (const auto& [field, option] : kOptions) {
    const bool named = m.starts_with(field) && m.size() > field.size() &&
                       (m[field.size()] == ':' || m[field.size()] == '[');
    if (named) return Error(e.code, std::string(option) + e.message.substr(field.size()));
  }
  return e;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

Result<void> check_required(const ManufactureArgs& a) {
  for (auto [value, option] : {std::pair{&a.ca, "--ca"},
                               {&a.pcid, "--pcid"},
                               {&a.out, "--out"},
                               {&a.ro_id, "--ro-id"},
                               {&a.operator_roots, "--operator-roots"}}) {
    if (value->empty()) {
      return fail(ErrorCode::missing_argument, fmt::format("{}: required", option));
    }
  }
  if (!a.op.empty() && !a.op_file.empty()) {
    return fail(ErrorCode::conflicting_arguments, "--op, --op-file: give one of them, not both");
  }
  if (a.op.empty() && a.op_file.empty()) {
    return fail(ErrorCode::missing_argument,
                "--op or --op-file: required (the Registration Operator's OP)");
  }
  if (path_exists(a.out)) {
    return fail(ErrorCode::already_exists,
                fmt::format("--out: {} already exists (a bundle is never overwritten)", a.out));
  }
  return {};
}

// The OP in hex, from the option or from a file (one line, surrounding whitespace ignored).
Result<Secret<16>> read_op(const ManufactureArgs& a) {
  if (!a.op.empty()) {
    auto op = parse_hex_fixed<16>(a.op, "--op");
    if (!op) return std::unexpected(op.error());
    Secret<16> secret(*op);
    secure_wipe(*op);
    return secret;
  }
  auto data = read_file(a.op_file);
  if (!data) return with_prefix(data.error(), "--op-file");
  const SecretBytes raw(std::move(*data));
  return parse_secret16_text(raw.text(), "--op-file");
}

Result<tre::SupplierBundle> build(const ManufactureArgs& a, const Secret<16>& op,
                                  const std::vector<pki::X509Ptr>& roots) {
  auto ca = pki::Authority::open(a.ca);
  if (!ca) return with_prefix(ca.error(), "--ca");
  tre::ManufactureSpec spec;
  spec.pcid = a.pcid;
  spec.device_id = a.device_id;
  spec.model = a.model;
  spec.ro_operator = a.ro_id;
  spec.op = op;
  if (!a.pin.empty()) spec.pin = a.pin;
  spec.certificate_days = a.days;
  spec.pcid_days = a.pcid_days;
  spec.ocsp_url = a.ocsp_url;
  for (const auto& r : roots) spec.operator_roots.push_back(r.get());
  SystemClock clock;
  OsRandom rng;
  auto bundle = tre::manufacture(*ca, spec, clock, rng);
  if (spec.pin) secure_wipe(spec.pin->data(), spec.pin->size());
  if (!bundle) return std::unexpected(in_option_terms(bundle.error()));
  return bundle;
}

Result<Fields> run_manufacture(const ManufactureArgs& a) {
  if (auto r = check_required(a); !r) return std::unexpected(r.error());
  auto op = read_op(a);
  if (!op) return std::unexpected(op.error());
  auto roots = pki::load_certificates(a.operator_roots);
  if (!roots) return with_prefix(roots.error(), "--operator-roots");
  auto bundle = build(a, *op, *roots);
  if (!bundle) return std::unexpected(bundle.error());
  // Checked again right before writing: the certificate took a moment.
  if (path_exists(a.out)) {
    return fail(ErrorCode::already_exists, fmt::format("--out: {} already exists", a.out));
  }
  if (auto w = tre::write_bundle(a.out, *bundle); !w) return with_prefix(w.error(), "--out");
  X509* leaf = bundle->platform_chain.front().get();
  Fields f;
  f.add("bundle", a.out).add("device_id", bundle->device_id).add("model", bundle->model);
  f.add("pcid", bundle->pcid).add("ro_operator", bundle->ro_operator);
  f.add("serial", pki::serial_hex(leaf));
  f.add("pcid_not_after", pki::utc_text(bundle->pcid_not_after));
  return f;
}

}  // namespace

void register_supplier(CLI::App& app, Result<Fields>* result) {
  auto* supplier = app.add_subcommand("supplier", "the equipment supplier's tools (F0)");
  supplier->require_subcommand(1);

  auto args = std::make_shared<ManufactureArgs>();
  auto* m = supplier->add_subcommand(
      "manufacture", "make one device's supplier bundle: PCID credential, platform key, PIN");
  m->add_option("--ca", args->ca, "the supplier CA directory (issues the platform certificate)");
  m->add_option("--pcid", args->pcid, "the PCID: an IMSI (6-15 digits) in the RO's MCC/MNC");
  m->add_option("--out", args->out, "the bundle to create (mode 0600; must not exist)");
  m->add_option("--ro-id", args->ro_id, "the Registration Operator's operator id");
  m->add_option("--operator-roots", args->operator_roots,
                "the operator root certificates the TRE will trust, PEM");
  m->add_option("--op", args->op, "the RO's OP, 32 hex digits (prefer --op-file)");
  m->add_option("--op-file", args->op_file, "a file holding the RO's OP in hex");
  m->add_option("--device-id", args->device_id, "the device id (default dev-<PCID>)");
  m->add_option("--model", args->model, "the device model (default mcim-sw-tre-1)");
  m->add_option("--pin", args->pin, "the bootstrap PIN, 4-16 digits (default: 8 random digits)");
  m->add_option("--days", args->days, "platform certificate validity in days (default 3650)");
  m->add_option("--pcid-days", args->pcid_days, "PCID credential lifetime in days (default 730)");
  m->add_option("--ocsp-url", args->ocsp_url, "OCSP URL for the platform certificate's AIA");
  m->callback([args, result] {
    *result = run_manufacture(*args);
    // CLI11 keeps its own copies of the option texts; ours at least are wiped.
    secure_wipe(args->op.data(), args->op.size());
    secure_wipe(args->pin.data(), args->pin.size());
  });
}

}  // namespace mcim::cli
