/* cxx.cc - proves that C++ programs work on top of the allocator: operator new/delete (which
 * libstdc++ implements with malloc/free, and aligned new with aligned_alloc) behind std::string,
 * std::vector, std::map, std::unordered_map, std::shared_ptr and over-aligned types, from several
 * std::threads with containers moved between threads, with every content checked. */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "check.h"

struct alignas(64) Wide {
    unsigned char bytes[192];
};

static std::string make_string(int i)
{
    std::string s = "value-" + std::to_string(i);
    s.append(static_cast<size_t>(i % 300), static_cast<char>('a' + i % 26));
    return s;
}

static void containers(int seed, unsigned long *checks)
{
    std::map<int, std::string> m;
    std::unordered_map<std::string, std::vector<int>> um;
    std::vector<std::unique_ptr<Wide>> wide;
    for (int i = 0; i < 20000; i++) {
        int k = (i * 7919 + seed) % 5000;
        m[k] = make_string(k);
        if (i % 5 == 0) {
            std::vector<int> v(static_cast<size_t>(i % 1000));
            for (size_t j = 0; j < v.size(); j++)
                v[j] = static_cast<int>(j) ^ k;
            um[make_string(k)] = std::move(v);
        }
        if (i % 50 == 0) {
            wide.emplace_back(new Wide);
            CHECK(is_aligned(wide.back().get(), 64), "new Wide = %p not 64-byte aligned",
                  static_cast<void *>(wide.back().get()));
            std::memset(wide.back()->bytes, k & 0xff, sizeof(Wide::bytes));
        }
        if (i % 3 == 0)
            m.erase((k * 31) % 5000);
    }
    for (const auto &kv : m) {
        CHECK(kv.second == make_string(kv.first), "map value for %d corrupted", kv.first);
        ++*checks;
    }
    for (const auto &kv : um) {
        int k = std::atoi(kv.first.c_str() + 6);
        for (size_t j = 0; j < kv.second.size(); j++)
            CHECK(kv.second[j] == (static_cast<int>(j) ^ k), "vector content corrupted");
        ++*checks;
    }
    for (const auto &w : wide) {
        for (unsigned char b : w->bytes)
            CHECK(b == w->bytes[0], "Wide content corrupted");
        ++*checks;
    }
}

int main()
{
    require_allocator_active();
    unsigned long checks = 0;
    containers(1, &checks);

    // Threads: build containers, hand them over to another thread that checks and drops them.
    std::mutex mu;
    std::vector<std::shared_ptr<std::vector<std::string>>> handoff;
    unsigned long tchecks[8] = {};
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; t++) {
        ts.emplace_back([t, &mu, &handoff, &tchecks] {
            containers(t + 10, &tchecks[t]);
            for (int r = 0; r < 50; r++) {
                auto v = std::make_shared<std::vector<std::string>>();
                for (int i = 0; i < 100; i++)
                    v->push_back(make_string(t * 1000 + i));
                std::shared_ptr<std::vector<std::string>> got;
                {
                    std::lock_guard<std::mutex> g(mu);
                    handoff.push_back(v);
                    if (handoff.size() > 4) {
                        got = handoff.front();
                        handoff.erase(handoff.begin());
                    }
                }
                if (got) {
                    const std::string &first = (*got)[0];
                    int base = std::atoi(first.c_str() + 6);
                    for (int i = 0; i < 100; i++)
                        CHECK((*got)[static_cast<size_t>(i)] == make_string(base + i),
                              "handed-over vector corrupted");
                    tchecks[t]++;
                }
            }
        });
    }
    for (auto &th : ts)
        th.join();
    for (unsigned long c : tchecks)
        checks += c;
    handoff.clear();
    std::printf("cxx: ok: %lu container checks\n", checks);
    return 0;
}
