// Scraping the coordinator's Prometheus endpoint (--metrics_listen) in e2e tests.
#ifndef LLMINT8_TESTS_E2E_METRICS_SCRAPE_H_
#define LLMINT8_TESTS_E2E_METRICS_SCRAPE_H_

#include <string>

namespace llmint8::e2e {

// GET /metrics from 127.0.0.1:port; empty when the scrape failed.
std::string Scrape(int port);

// The value of the sample `series` (name plus labels, as exposed), or -1 when absent.
double Sample(const std::string& text, const std::string& series);

// Scrapes until `series` has `want` or `seconds` pass; the last value seen.
double WaitForSample(int port, const std::string& series, double want, double seconds);

}  // namespace llmint8::e2e

#endif  // LLMINT8_TESTS_E2E_METRICS_SCRAPE_H_
