// An OCSP responder's HTTP answer (pki/ocsp.h, independent of any server) as this server's
// response: for the PVA's responder and `mcim pki ocsp serve`.
#pragma once

#include <utility>

#include "net/http_server.h"
#include "pki/ocsp.h"

namespace mcim::net {

inline HttpResponse to_http(pki::OcspHttpReply reply) {
  HttpResponse r;
  r.status = reply.status;
  r.content_type = std::move(reply.content_type);
  r.body.assign(reply.body.begin(), reply.body.end());
  r.headers = std::move(reply.headers);
  return r;
}

}  // namespace mcim::net
