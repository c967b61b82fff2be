#include "common/thread_name.h"

#include <pthread.h>

#include <string>

namespace mcim {

void set_thread_name(std::string_view name) {
  if (name.empty()) return;
  const std::string cut(name.substr(0, kMaxThreadName));
  (void)::pthread_setname_np(::pthread_self(), cut.c_str());
}

}  // namespace mcim
