/* cxx.cpp - pattern: a C++ program's allocation mix: std::map<std::string, std::vector<long>>
 * with keys that are short (in the string's inline buffer) or long (heap), inserts, lookups,
 * push_back growth of vectors, erases of whole entries, and string concatenation, i.e. many
 * small operator new / delete calls of mixed sizes through libstdc++. THREADS threads each
 * run their own map (no sharing), so the allocator's per-thread paths are what scales.
 *
 * Checks: every element pushed into a key's vector encodes the key's id and a step number;
 * vectors are verified (right key, increasing steps, expected length) before every erase and
 * at the end; built strings are compared with their expected length and contents; the count
 * of live elements must match a separate counter.
 *
 * usage: cxx THREADS TOTAL_STEPS KEYS
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

static void fail(const char *what, long a, long b)
{
    std::fprintf(stderr, "CORRUPTION: %s (%ld vs %ld)\n", what, a, b);
    std::fflush(stderr);
    std::_Exit(2);
}

static uint64_t next(uint64_t &s)
{
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
}

static std::string key_for(long id)
{
    std::string k = "k" + std::to_string(id);
    if (id % 3 == 0) k += "-a-longer-key-that-does-not-fit-the-inline-buffer";
    return k;
}

static void check_vec(const std::vector<long> &v, long id)
{
    long prev = -1;
    for (long x : v) {
        if ((x & 0xffff) != (id & 0xffff)) fail("element of the wrong key", x & 0xffff, id & 0xffff);
        if ((x >> 16) <= prev) fail("elements out of order", x >> 16, prev);
        prev = x >> 16;
    }
}

static void worker(long tid, long steps, long keys, unsigned long long *out)
{
    uint64_t r = (uint64_t)(tid + 1) * 0x9E3779B97F4A7C15ULL;
    std::map<std::string, std::vector<long>> m;
    long live = 0;
    unsigned long long sum = 0;
    for (long s = 0; s < steps; s++) {
        long id = (long)(next(r) % (uint64_t)keys);
        uint64_t op = next(r) % 100;
        std::string k = key_for(id);
        if (op < 80) {
            m[k].push_back((s << 16) | (id & 0xffff));
            live++;
        } else if (op < 95) {
            auto it = m.find(k);
            if (it != m.end()) {
                check_vec(it->second, id);
                live -= (long)it->second.size();
                m.erase(it);
            }
        } else {
            std::string text;
            long parts = 1 + (long)(next(r) % 40);
            for (long p = 0; p < parts; p++) text += k + "/" + std::to_string(p) + ";";
            std::vector<std::string> words;
            size_t start = 0, pos;
            while ((pos = text.find(';', start)) != std::string::npos) {
                words.push_back(text.substr(start, pos - start));
                start = pos + 1;
            }
            if ((long)words.size() != parts) fail("split count", (long)words.size(), parts);
            for (long p = 0; p < parts; p++)
                if (words[(size_t)p] != k + "/" + std::to_string(p)) fail("string content", p, parts);
            sum += text.size();
        }
    }
    long counted = 0;
    for (auto &kv : m) {
        long id = std::atol(kv.first.c_str() + 1);
        if (kv.first != key_for(id)) fail("key text", id, 0);
        check_vec(kv.second, id);
        counted += (long)kv.second.size();
    }
    if (counted != live) fail("live element count", counted, live);
    *out = sum + (unsigned long long)live;
}

int main(int argc, char **argv)
{
    long nthreads = argc > 1 ? std::atol(argv[1]) : 1;
    long steps = argc > 2 ? std::atol(argv[2]) : 1000000;
    long keys = argc > 3 ? std::atol(argv[3]) : 5000;
    if (nthreads < 1 || keys < 1) return 64;
    std::vector<unsigned long long> sums((size_t)nthreads);
    std::vector<std::thread> th;
    for (long t = 0; t < nthreads; t++) th.emplace_back(worker, t, steps / nthreads, keys, &sums[(size_t)t]);
    unsigned long long sum = 0;
    for (long t = 0; t < nthreads; t++) {
        th[(size_t)t].join();
        sum += sums[(size_t)t];
    }
    std::printf("RESULT OK cxx checksum=%llu\n", sum);
    return 0;
}
