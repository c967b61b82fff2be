// One JSON exchange with a peer service, as every mcim client makes it (the SHO towards the RO and
// the PVA, the device agent, the fleet driver): send the body, accept the expected status, turn a
// refusal into the Error its envelope stands for (error_from_response), and read the answer. The
// callers differ only in how they report faults that are not the peer's refusal: a device or a
// tool keeps the transport's code (chain_invalid for a pin mismatch says more than io_error),
// while a server answering its own caller reports every such fault as io_error so that a broken
// peer is never mistaken for the caller's bad input (400/422).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "net/http_error.h"
#include "net/https_client.h"

namespace mcim::net {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct PeerCall {
  std::string_view peer;  // names the peer in every error: "ro: ..."
  int ok_status = 0;      // the status that is an answer; 0: any 2xx
  Headers headers{};
  // true: transport failures and answers that cannot be read are io_error (a server's view);
  // false: the transport's own code, and bad_format for an unreadable answer (a client's view).
  bool faults_as_io_error = false;
};

// The answer with the accepted status. `body` is sent as JSON unless it is null (then nothing,
// without a content type). A 2xx other than ok_status is a fault as described above.
Result<HttpResponse> exchange(HttpsClient& client, std::string_view method, const std::string& url,
                              const Json& body, const PeerCall& call);

// exchange(), then the answer's body parsed as a JSON object ({} for an empty body).
Result<Json> call_json(HttpsClient& client, std::string_view method, const std::string& url,
                       const Json& body, const PeerCall& call);

}  // namespace mcim::net
