// Time as a port (STYLE.md §5): code that checks validity windows or freshness takes a Clock&;
// production passes SystemClock, tests a FakeClock they move by hand.
#pragma once

#include <chrono>

namespace mcim {

using TimePoint = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint t) : t_(t) {}
  TimePoint now() const override { return t_; }
  void advance(std::chrono::seconds s) { t_ += s; }
  void set(TimePoint t) { t_ = t; }

 private:
  TimePoint t_;
};

}  // namespace mcim
