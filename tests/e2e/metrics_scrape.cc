#include "tests/e2e/metrics_scrape.h"

#include <chrono>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "httplib.h"

namespace llmint8::e2e {

std::string Scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  httplib::Result res = client.Get("/metrics");
  if (!res || res->status != 200) return "";
  return res->body;
}

double Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (absl::StartsWith(line, series + " ")) {
      double v = 0;
      return absl::SimpleAtod(line.substr(series.size() + 1), &v) ? v : -1;
    }
  }
  return -1;
}

double WaitForSample(int port, const std::string& series, double want, double seconds) {
  double v = -1;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    v = Sample(Scrape(port), series);
    if (v == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return v;
}

}  // namespace llmint8::e2e
