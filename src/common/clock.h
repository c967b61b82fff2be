// Time as a port (STYLE.md §5): code that checks validity windows or freshness takes a Clock&;
// production passes SystemClock, tests a FakeClock they move by hand.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

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

// The system clock moved by an offset that may change while other threads read it: the
// simulator's clock (`mcim demo --scenario`), which jumps a whole system ahead in time instead of
// waiting for a year to pass.
class OffsetClock final : public Clock {
 public:
  TimePoint now() const override {
    return std::chrono::system_clock::now() + std::chrono::seconds(offset_s_.load());
  }
  void advance(std::chrono::seconds s) { offset_s_ += s.count(); }
  std::chrono::seconds offset() const { return std::chrono::seconds(offset_s_.load()); }

 private:
  std::atomic<std::int64_t> offset_s_{0};
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
