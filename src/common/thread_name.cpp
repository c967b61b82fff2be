#include "common/thread_name.h"

#include <pthread.h>

#include <string>

namespace mcim {

namespace {

void name(pthread_t thread, std::string_view name) {
  if (name.empty()) return;
  const std::string cut(name.substr(0, kMaxThreadName));
  (void)::pthread_setname_np(thread, cut.c_str());
}

}  // namespace

void set_thread_name(std::string_view name) { mcim::name(::pthread_self(), name); }

void set_thread_name(std::thread& thread, std::string_view name) {
  mcim::name(thread.native_handle(), name);
}

}  // namespace mcim
