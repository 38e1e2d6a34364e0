"""churn.py - a Python allocation workload whose output proves the allocator kept every object
intact: four threads churn dicts, lists, strings, bytes, sets, tuples and instances of a
class (with reference cycles, so the cyclic GC runs too), verify everything they built against
an independent recomputation, and fold what they saw into a digest.

The digest depends only on the seeds, never on addresses, hash randomisation or thread
scheduling, so running this under poolmalloc (embedded, preloaded, PYTHONMALLOC=malloc) must
print exactly what plain python3 prints. scripts/python-tests.sh compares the two.

usage: churn.py [ROUNDS]     prints "churn digest <hex>" and exits 0; exits 1 on a mismatch.
"""
import gc
import hashlib
import random
import sys
import threading

THREADS = 4
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30


class Node:
    __slots__ = ("key", "payload", "children", "parent", "__weakref__")

    def __init__(self, key, payload):
        self.key = key
        self.payload = payload
        self.children = []
        self.parent = None


class Plain:
    def __init__(self, i):
        self.i = i
        self.name = "plain-%d" % i
        self.me = self  # a cycle: only the collector frees it


def churn(tid, rounds, out, errors):
    rng = random.Random(1000 + tid)
    h = hashlib.sha256()
    try:
        for r in range(rounds):
            # dicts: insert, overwrite, delete; rebuild and compare.
            d = {}
            for i in range(3000):
                k = rng.randrange(2000)
                if rng.random() < 0.25:
                    d.pop(k, None)
                else:
                    d[k] = ("v", k, r, tid) * (1 + k % 3)
            expect = {}
            for k in sorted(d):
                expect[k] = ("v", k, r, tid) * (1 + k % 3)
            if d != expect:
                raise AssertionError("dict contents differ (thread %d round %d)" % (tid, r))
            h.update(repr(sorted(d.items())[:50]).encode())
            h.update(str(len(d)).encode())

            # lists: grow, shrink, slice, sort.
            lst = [rng.randrange(10**9) for _ in range(5000)]
            lst.extend(lst[::3])
            del lst[100:900]
            lst.sort()
            if any(lst[i] > lst[i + 1] for i in range(len(lst) - 1)):
                raise AssertionError("list not sorted")
            h.update(str(sum(lst)).encode())

            # strings and bytes of many sizes, joined, split and rebuilt.
            parts = ["%d:%s" % (i, "x" * rng.randrange(0, 300)) for i in range(800)]
            s = "|".join(parts)
            if s.split("|") != parts:
                raise AssertionError("string split mismatch")
            b = s.encode("utf-8")
            if b.decode("utf-8") != s:
                raise AssertionError("bytes round trip")
            u = "".join(chr(0x3b1 + (i % 20)) for i in range(rng.randrange(100, 2000)))
            if len(u.encode("utf-8")) != 2 * len(u):
                raise AssertionError("unicode length")
            h.update(hashlib.sha256(b).digest())
            h.update(u.encode("utf-8"))

            # sets and tuples (iterate sorted: set order depends on hash randomisation).
            st = {("t", i % 700, tid) for i in range(3000)}
            st |= {("u", i) for i in range(rng.randrange(500))}
            st -= {("t", i, tid) for i in range(0, 700, 2)}
            h.update(repr(sorted(st)[:20]).encode() + str(len(st)).encode())

            # objects: a tree with parent links (cycles) and instances with self-references.
            root = Node(0, b"root")
            nodes = [root]
            for i in range(1, 2000):
                parent = nodes[rng.randrange(len(nodes))]
                n = Node(i, bytes([i % 256]) * (i % 64))
                n.parent = parent
                parent.children.append(n)
                nodes.append(n)
            total = 0
            stack = [root]
            while stack:
                n = stack.pop()
                total += n.key + len(n.payload)
                stack.extend(n.children)
            if total != sum(n.key + len(n.payload) for n in nodes):
                raise AssertionError("tree walk mismatch")
            h.update(str(total).encode())
            plains = [Plain(i) for i in range(1000)]
            if sum(p.i for p in plains) != 999 * 1000 // 2:
                raise AssertionError("instances")
            del root, nodes, stack, plains, n
            if r % 10 == 9:
                gc.collect()
    except Exception as e:  # report, do not hang the other threads
        errors.append("thread %d: %r" % (tid, e))
    out[tid] = h.hexdigest()


def main():
    out = [None] * THREADS
    errors = []
    threads = [threading.Thread(target=churn, args=(t, ROUNDS, out, errors)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    if errors or None in out:
        for e in errors:
            print("churn error:", e, file=sys.stderr)
        return 1
    print("churn digest", hashlib.sha256("".join(out).encode()).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
