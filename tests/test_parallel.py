"""posegen._parallel: items at once in threads, results complete and in order, errors raised."""

import threading
import time

import pytest

from posegen._parallel import Serialized, default_workers, thread_map


def test_thread_map_runs_every_item_once_in_worker_threads():
    seen = []

    def work(x):
        seen.append((x, threading.current_thread().name))
        time.sleep(0.01)
        return x * x

    got = dict(thread_map(work, range(10), 3))
    assert got == {i: i * i for i in range(10)}
    assert sorted(x for x, _ in seen) == list(range(10))
    assert all(name.startswith("posegen") for _, name in seen)  # not the caller's thread
    assert list(thread_map(work, [3, 4], 1)) == [(0, 9), (1, 16)]  # one worker: in order, inline


def test_thread_map_raises_and_cancels_the_rest():
    started = []

    def work(x):
        started.append(x)
        time.sleep(0.05)
        if x == 1:
            raise ValueError("item 1 is bad")
        return x

    with pytest.raises(ValueError, match="item 1 is bad"):
        list(thread_map(work, range(50), 2))
    assert len(started) < 50  # the items not started when it failed never ran


def test_serialized_lets_one_thread_in_at_a_time():
    class Counter:
        name = "counter"

        def __init__(self):
            self.inside = self.most = 0

        def estimate(self, x):
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0.005)
            self.inside -= 1
            return x

    c = Counter()
    s = Serialized(c)
    assert s.name == "counter"
    assert sorted(r for _, r in thread_map(s.estimate, range(20), 4)) == list(range(20))
    assert c.most == 1
    assert default_workers("cuda:0") == 1 and default_workers("cpu") >= 1
