// One JSON exchange with a peer (net/peer_call.h) against our TLS server: answers read, refusals
// turned into their envelope's code, and the two ways of reporting a fault that is not a refusal
// (a client keeps the transport's code; a server reports io_error).
#include "net/peer_call.h"

#include <gtest/gtest.h>

#include "net_test_util.h"

namespace mcim::net {
namespace {

using testing::make_client;
using testing::start_server;
using testing::tls_options;

// Answers by path: /ok (200 object), /created (201 object), /empty (204), /array (200 [1]),
// /text (200 not JSON), /refused (409 envelope), /teapot (418 no envelope); echoes what came.
HttpResponse peer(const HttpRequest& r) {
  const std::string& path = r.target;
  if (path == "/ok") {
    return json_response(200, Json{{"method", r.method},
                                   {"body", r.body},
                                   {"type", r.content_type},
                                   {"auth", r.header("authorization")}});
  }
  if (path == "/created") return json_response(201, Json{{"id", "7"}});
  if (path == "/empty") return HttpResponse{204, "", "", {}};
  if (path == "/array") return json_response(200, Json::array({1}));
  if (path == "/text") return HttpResponse{200, "text/plain", "hello", {}};
  if (path == "/refused") return error_response(409, "replayed_package", "package: seen before");
  return HttpResponse{418, "text/plain", "teapot", {}};
}

class PeerCallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = start_server(peer, tls_options());
    ASSERT_TRUE(server_);
    client_ = make_client();
  }
  std::string url(const std::string& path) const { return server_->url() + path; }
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<HttpsClient> client_;
};

TEST_F(PeerCallTest, SendsTheBodyAndHeadersAndReadsTheAnswer) {
  const auto r =
      call_json(*client_, "POST", url("/ok"), Json{{"a", 1}},
                {.peer = "ro", .ok_status = 200, .headers = {{"Authorization", "Bearer t"}}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["method"], "POST");
  EXPECT_EQ((*r)["body"], R"({"a":1})");
  EXPECT_EQ((*r)["type"], "application/json");
  EXPECT_EQ((*r)["auth"], "Bearer t");
}

TEST_F(PeerCallTest, ANullBodySendsNothing) {
  const auto r = call_json(*client_, "GET", url("/ok"), nullptr, {.peer = "ro"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["body"], "");
  EXPECT_EQ((*r)["type"], "");
}

TEST_F(PeerCallTest, AnyTwoHundredUnlessOneIsNamed) {
  EXPECT_TRUE(call_json(*client_, "POST", url("/created"), Json::object(), {.peer = "ro"}));
  const auto empty = call_json(*client_, "DELETE", url("/empty"), nullptr, {.peer = "ro"});
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, Json::object());
  const auto wrong = call_json(*client_, "POST", url("/created"), Json::object(),
                               {.peer = "ro", .ok_status = 200});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::bad_format);
  EXPECT_EQ(wrong.error().message, "ro: answered HTTP 201 where 200 was expected");
}

TEST_F(PeerCallTest, ARefusalCarriesThePeersCode) {
  for (bool server_side : {false, true}) {
    const auto r = call_json(*client_, "POST", url("/refused"), Json::object(),
                             {.peer = "dpf", .faults_as_io_error = server_side});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::replayed_package);
    EXPECT_EQ(r.error().message, "dpf: package: seen before");
    const auto teapot = call_json(*client_, "GET", url("/teapot"), nullptr, {.peer = "dpf"});
    ASSERT_FALSE(teapot);
    EXPECT_EQ(teapot.error().code, ErrorCode::io_error);
  }
}

TEST_F(PeerCallTest, AnUnreadableAnswerIsBadFormatOrIoError) {
  for (const char* path : {"/array", "/text"}) {
    const auto client_view = call_json(*client_, "GET", url(path), nullptr, {.peer = "pva"});
    ASSERT_FALSE(client_view) << path;
    EXPECT_EQ(client_view.error().code, ErrorCode::bad_format) << path;
    EXPECT_EQ(client_view.error().message, "pva: the answer is not a JSON object");
    const auto server_view =
        call_json(*client_, "GET", url(path), nullptr, {.peer = "pva", .faults_as_io_error = true});
    ASSERT_FALSE(server_view) << path;
    EXPECT_EQ(server_view.error().code, ErrorCode::io_error) << path;
  }
  // exchange() leaves the body to the caller: a text answer is an answer.
  const auto text =
      exchange(*client_, "GET", url("/text"), nullptr, {.peer = "drf", .ok_status = 200});
  ASSERT_TRUE(text);
  EXPECT_EQ(text->body, "hello");
}

TEST_F(PeerCallTest, ATransportFailureKeepsItsCodeOnlyForClients) {
  HttpsClientOptions o;
  o.spki_pin = Bytes<32>{};  // no server has this key
  auto pinned = make_client("", o);
  const auto client_view = call_json(*pinned, "GET", url("/ok"), nullptr, {.peer = "dpf"});
  ASSERT_FALSE(client_view);
  EXPECT_EQ(client_view.error().code, ErrorCode::chain_invalid);
  EXPECT_TRUE(client_view.error().message.starts_with("dpf: ")) << client_view.error().message;
  const auto server_view =
      call_json(*pinned, "GET", url("/ok"), nullptr, {.peer = "dpf", .faults_as_io_error = true});
  ASSERT_FALSE(server_view);
  EXPECT_EQ(server_view.error().code, ErrorCode::io_error);
}

}  // namespace
}  // namespace mcim::net
