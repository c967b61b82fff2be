#include "sim/fleet.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "common/hex.h"
#include "net/peer_call.h"
#include "pki/openssl.h"
#include "tre/bundle.h"
#include "tre/tre.h"

namespace mcim::sim {
namespace {

using net::Json;
using SteadyClock = std::chrono::steady_clock;

double ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

Result<Json> call(net::HttpsClient& client, std::string_view method, const std::string& url,
                  const Json& body, int ok_status, std::string_view what,
                  net::Headers headers = {}) {
  return net::call_json(client, method, url, body,
                        {.peer = what, .ok_status = ok_status, .headers = std::move(headers)});
}

// Samples per step name, from every worker thread.
class Timings {
 public:
  void add(const std::string& step, double ms) {
    std::lock_guard lock(mu_);
    samples_[step].push_back(ms);
  }
  std::vector<StepStats> stats(const std::vector<std::string>& order) const {
    std::lock_guard lock(mu_);
    std::vector<StepStats> out;
    for (const std::string& step : order) {
      const auto it = samples_.find(step);
      if (it == samples_.end() || it->second.empty()) continue;
      out.push_back(StepStats{step, it->second.size(), percentile_ms(it->second, 50),
                              percentile_ms(it->second, 99)});
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::vector<double>> samples_;
};

// Runs fn(i) for i in [0, n) on `threads` threads; the first error stops the others early and is
// returned.
Result<void> parallel_for(std::size_t n, std::size_t threads,
                          const std::function<Result<void>(std::size_t)>& fn) {
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::optional<Error> first;
  std::atomic<bool> stop{false};
  auto worker = [&] {
    for (std::size_t i; !stop && (i = next++) < n;) {
      if (auto done = fn(i); !done) {
        std::lock_guard lock(mu);
        if (!first) first = done.error();
        stop = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < std::min(threads, n); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (first) return std::unexpected(*first);
  return {};
}

// Whether device i of `mix` (any of the first four: the cycle is at most four long) needs `want`.
bool mix_uses(AccessMix mix, std::size_t devices, bool (*want)(device::Access)) {
  for (std::size_t i = 0; i < std::min<std::size_t>(devices, 4); ++i) {
    if (want(access_of(mix, i))) return true;
  }
  return false;
}

bool is_direct(device::Access a) { return a == device::Access::direct; }
bool is_eap(device::Access a) {
  return a == device::Access::eap_aka || a == device::Access::eap_aka_prime;
}

Result<void> check_access(const FleetEndpoints& e, const FleetOptions& o) {
  if (mix_uses(o.access, o.devices, is_direct) && e.drf_url.empty()) {
    return fail(ErrorCode::invalid_argument, "drf_url: required for direct access");
  }
  if (mix_uses(o.access, o.devices, is_eap) && (e.radius_port == 0 || !e.radius_secret)) {
    return fail(ErrorCode::invalid_argument,
                "radius_port and radius_secret: required for EAP access");
  }
  return {};
}

// The agent of device `index`: the fleet's, with the endpoints and the device's access.
device::AgentConfig agent_config(const FleetEndpoints& e, const FleetOptions& o, std::size_t index,
                                 const std::string& device_id) {
  device::AgentConfig a = o.agent;
  a.vno_url = e.vno_url;
  a.tls = e.device_tls;
  a.access = access_of(o.access, index);
  if (a.access == device::Access::direct) a.drf_url = e.drf_url;
  if (is_eap(a.access)) {
    a.eap.radius_host = e.radius_host;
    a.eap.radius_port = e.radius_port;
    a.eap.radius_secret = e.radius_secret;
    a.eap.work_dir = (std::filesystem::path(o.dir) / "eap" / device_id).string();
  }
  return a;
}

}  // namespace

Result<AccessMix> parse_access_mix(std::string_view text) {
  if (text == "3gpp") return AccessMix::threegpp;
  if (text == "non3gpp") return AccessMix::non3gpp;
  if (text == "both") return AccessMix::both;
  return fail(ErrorCode::invalid_argument, "access: 3gpp, non3gpp or both");
}

device::Access access_of(AccessMix mix, std::size_t i) {
  using device::Access;
  static constexpr Access kNon3gpp[] = {Access::direct, Access::eap_aka, Access::eap_aka_prime};
  static constexpr Access kBoth[] = {Access::threegpp, Access::direct, Access::eap_aka,
                                     Access::eap_aka_prime};
  switch (mix) {
    case AccessMix::threegpp: return Access::threegpp;
    case AccessMix::non3gpp: return kNon3gpp[i % std::size(kNon3gpp)];
    case AccessMix::both: return kBoth[i % std::size(kBoth)];
  }
  return Access::threegpp;
}

std::string pin_of(const tre::SupplierBundle& b) {
  return std::string(tre::pin_text(b));
}

Result<std::vector<FleetDevice>> manufacture(const FleetEndpoints& e, const FleetOptions& o,
                                             const std::string& batch) {
  Json order{{"batch_id", batch}, {"first_pcid", o.first_pcid}, {"count", o.devices}};
  if (o.pcid_days > 0) order["pcid_days"] = o.pcid_days;
  auto made = call(*e.factory, "POST", e.supplier_url + "/v1/batches", order, 201, "manufacture");
  if (!made) return std::unexpected(made.error());
  if (made->value("handover", "") != "done") {
    return std::unexpected(
        Error(ErrorCode::io_error, fmt::format("manufacture: batch {} was not handed over to the "
                                               "RO ({})",
                                               batch, made->value("handover", "?"))));
  }
  const std::filesystem::path bundles =
      std::filesystem::path(e.supplier_out_dir) / batch / "bundles";
  std::vector<FleetDevice> devices;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(bundles, ec)) {
    auto b = tre::read_bundle(entry.path().string());
    if (!b) return with_prefix(b.error(), "manufacture");
    devices.push_back(FleetDevice{std::move(*b), std::nullopt});
  }
  if (ec || devices.size() != o.devices) {
    return std::unexpected(
        Error(ErrorCode::io_error, fmt::format("manufacture: {} bundles in {}, {} ordered",
                                               devices.size(), bundles.string(), o.devices)));
  }
  std::sort(devices.begin(), devices.end(), [](const FleetDevice& x, const FleetDevice& y) {
    return x.bundle.pcid < y.bundle.pcid;
  });
  return devices;
}

Result<void> init_tre(FleetDevice& d, const FleetOptions& o) {
  tre::Options to;
  to.dir = (std::filesystem::path(o.dir) / "tre" / d.bundle.device_id).string();
  to.binary = o.tre_binary;
  if (auto made = tre::Tre::init(to, d.bundle); !made) {
    return with_prefix(made.error(), d.bundle.device_id);
  }
  auto opened = tre::Tre::open(to);
  if (!opened) return with_prefix(opened.error(), d.bundle.device_id);
  d.tre.emplace(std::move(*opened));
  return {};
}

Result<void> register_device(FleetDevice& d, const FleetEndpoints& e, const FleetOptions& o,
                             const RegisterOptions& ro) {
  auto timed = [&](std::string_view step, double ms) {
    if (ro.timed) ro.timed(step, ms);
  };
  const std::string& id = d.bundle.device_id;
  auto pem = pki::certificate_pem(d.bundle.platform_chain.front().get());
  if (!pem) return std::unexpected(pem.error());
  const std::vector<std::pair<std::string, std::string>> bearer = {
      {"Authorization", "Bearer " + e.owner_token}};
  auto t0 = SteadyClock::now();
  Json body{{"device_id", id},
            {"pcid", d.bundle.pcid},
            {"pin", ro.pin.empty() ? pin_of(d.bundle) : ro.pin},
            {"platform_cert", *pem}};
  if (ro.nonce_lifetime) body["nonce_lifetime_s"] = ro.nonce_lifetime->count();
  if (ro.change) body["change"] = true;
  auto reg = call(*e.owner, "POST", e.sho_url + "/v1/subscribers", std::move(body), 201,
                  fmt::format("register {}", id), bearer);
  if (!reg) return std::unexpected(reg.error());
  timed("register", ms_since(t0));
  auto nonce = parse_hex_fixed<16>(reg->value("registration_nonce", ""), "registration_nonce");
  if (!nonce) return with_prefix(nonce.error(), fmt::format("register {}", id));
  if (auto kept = d.tre->record_registration(*nonce); !kept) {
    return with_prefix(kept.error(), fmt::format("register {}", id));
  }
  if (!ro.activate || ro.change) return {};
  t0 = SteadyClock::now();
  if (auto on = announce_switch_on(d, e, o.activation_window); !on) return on;
  timed("activate", ms_since(t0));
  return {};
}

Result<void> announce_switch_on(const FleetDevice& d, const FleetEndpoints& e,
                                std::chrono::seconds window) {
  const std::string& id = d.bundle.device_id;
  auto on = call(*e.owner, "POST", e.sho_url + "/v1/subscribers/" + id + "/activation",
                 Json{{"window_s", window.count()}}, 200, fmt::format("activate {}", id),
                 {{"Authorization", "Bearer " + e.owner_token}});
  if (!on) return std::unexpected(on.error());
  return {};
}

double percentile_of_sorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const std::size_t at = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return sorted[std::min(at, sorted.size() - 1)];
}

double percentile_ms(std::vector<double> samples, double p) {
  std::sort(samples.begin(), samples.end());
  return percentile_of_sorted(samples, p);
}

namespace {

// A failed device counted under "step: code" (the message names the step first: "discovery: ...").
void count_failure(std::mutex& mu, std::map<std::string, std::size_t>& failures, const Error& e) {
  std::lock_guard lock(mu);
  ++failures[fmt::format("{}: {}", e.message.substr(0, e.message.find(':')), to_string(e.code))];
}

// F4 for every device that is operational: the owner's change order at the new SHO, the device's
// change, its old session ended; timed into report.change_*.
void change_fleet(const FleetEndpoints& e, const FleetOptions& o, std::vector<FleetDevice>& devices,
                  std::vector<std::optional<device::Attachment>>& operational,
                  FleetReport& report) {
  if (o.phase) o.phase("change");
  FleetEndpoints at_new = e;
  at_new.sho_url = o.change_to_url;
  Timings timings;
  SystemClock clock;
  std::atomic<std::size_t> done{0}, failed{0};
  std::mutex failures_mu;
  const auto c0 = SteadyClock::now();
  (void)parallel_for(devices.size(), o.concurrency, [&](std::size_t i) -> Result<void> {
    if (!operational[i]) return {};
    FleetDevice& d = devices[i];
    device::AgentConfig config = agent_config(e, o, i, d.bundle.device_id);
    config.drf_url = e.drf_url;
    device::Agent a(*d.tre, std::move(config), clock);
    a.on_step([&](const device::StepTiming& s) {
      timings.add(std::string(device::to_string(s.step)),
                  std::chrono::duration<double, std::milli>(s.took).count());
    });
    const auto d0 = SteadyClock::now();
    auto ordered = register_device(
        d, at_new, o,
        {.timed = [&](std::string_view, double ms) { timings.add("change_order", ms); },
         .change = true});
    Result<device::ChangeOutcome> outcome =
        ordered ? a.change_operator() : std::unexpected(ordered.error());
    if (outcome) {
      timings.add("change", ms_since(d0));
      (void)a.detach(*operational[i]);
    } else {
      ++failed;
      count_failure(failures_mu, report.change_failures, outcome.error());
    }
    const std::size_t n = ++done;
    if (o.progress) o.progress(n, failed, devices.size());
    return {};
  });
  report.change_seconds = std::chrono::duration<double>(SteadyClock::now() - c0).count();
  report.change_failed = failed;
  report.changed = report.provisioned - report.change_failed;
  report.changes_per_s =
      report.change_seconds > 0 ? double(report.changed) / report.change_seconds : 0;
  std::vector<std::string> order = {"change_order"};
  for (device::Step s :
       {device::Step::connect_dpf, device::Step::attestation, device::Step::package,
        device::Step::install, device::Step::report, device::Step::attach_imsi}) {
    order.emplace_back(device::to_string(s));
  }
  order.emplace_back("change");
  report.change_steps = timings.stats(order);
}

}  // namespace

Result<FleetReport> run_fleet(const FleetEndpoints& e, const FleetOptions& o) {
  if (o.devices == 0 || o.concurrency == 0) {
    return std::unexpected(Error(ErrorCode::invalid_argument, "devices and concurrency: >= 1"));
  }
  if (auto r = check_access(e, o); !r) return std::unexpected(r.error());
  if (!e.factory || !e.owner) {
    return std::unexpected(Error(ErrorCode::missing_argument, "the factory and owner clients"));
  }
  if (mix_uses(o.access, o.devices, is_eap)) {
    // The EAP peers' configs, control sockets and logs, in a private directory.
    const std::filesystem::path eap = std::filesystem::path(o.dir) / "eap";
    std::error_code ec;
    std::filesystem::create_directories(eap, ec);
    if (!ec) std::filesystem::permissions(eap, std::filesystem::perms::owner_all, ec);
    if (ec) return fail(ErrorCode::io_error, fmt::format("{}: {}", eap.string(), ec.message()));
  }
  const std::string batch =
      o.batch_id.empty()
          ? fmt::format("fleet-{}", std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count())
          : o.batch_id;
  Timings timings;
  const auto t0 = SteadyClock::now();
  auto devices = manufacture(e, o, batch);
  if (!devices) return std::unexpected(devices.error());
  timings.add("manufacture", ms_since(t0));
  if (o.phase) o.phase("register");

  auto prepared = parallel_for(devices->size(), o.concurrency, [&](std::size_t i) -> Result<void> {
    FleetDevice& d = (*devices)[i];
    if (auto made = init_tre(d, o); !made) return made;
    return register_device(d, e, o, {.timed = [&](std::string_view step, double ms) {
                             timings.add(std::string(step), ms);
                           }});
  });
  if (!prepared) return std::unexpected(prepared.error());

  if (!o.change_to_url.empty() && e.drf_url.empty()) {
    return fail(ErrorCode::missing_argument, "an operator change needs the RO's URL (drf_url)");
  }
  SystemClock clock;
  std::atomic<std::size_t> done{0}, failed{0};
  std::mutex failures_mu;
  std::map<std::string, std::size_t> failures;
  // The operational session of each device, ended after its change.
  std::vector<std::optional<device::Attachment>> operational(devices->size());
  if (o.phase) o.phase("provision");
  const auto p0 = SteadyClock::now();
  (void)parallel_for(devices->size(), o.concurrency, [&](std::size_t i) -> Result<void> {
    FleetDevice& d = (*devices)[i];
    device::Agent a(*d.tre, agent_config(e, o, i, d.bundle.device_id), clock);
    a.on_step([&](const device::StepTiming& s) {
      timings.add(std::string(device::to_string(s.step)),
                  std::chrono::duration<double, std::milli>(s.took).count());
    });
    const auto d0 = SteadyClock::now();
    auto outcome = a.provision();
    if (outcome) {
      timings.add("provision", ms_since(d0));
      operational[i] = std::move(outcome->operational);
    } else {
      ++failed;
      count_failure(failures_mu, failures, outcome.error());
    }
    const std::size_t n = ++done;
    if (o.progress) o.progress(n, failed, devices->size());
    return {};
  });
  FleetReport report;
  report.provision_seconds = std::chrono::duration<double>(SteadyClock::now() - p0).count();
  report.devices = devices->size();
  report.failed = failed;
  report.provisioned = report.devices - report.failed;
  report.throughput_per_s =
      report.provision_seconds > 0 ? double(report.provisioned) / report.provision_seconds : 0;
  for (std::size_t i = 0; i < devices->size(); ++i) {
    ++report.access[std::string(device::to_string(access_of(o.access, i)))];
  }
  std::vector<std::string> order = {"manufacture", "register", "activate"};
  for (device::Step s :
       {device::Step::attach_pcid, device::Step::connect_direct, device::Step::attach_eap,
        device::Step::discovery, device::Step::attestation, device::Step::package,
        device::Step::install, device::Step::report, device::Step::attach_imsi}) {
    order.emplace_back(device::to_string(s));
  }
  order.emplace_back("provision");
  report.steps = timings.stats(order);
  report.failures = std::move(failures);
  if (!o.change_to_url.empty()) change_fleet(e, o, *devices, operational, report);
  if (o.phase) o.phase("done");
  return report;
}

}  // namespace mcim::sim
